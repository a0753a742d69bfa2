"""DRF authentication by ``Authorization: Bearer <token>``, with a reason on every refusal."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from . import lockout, sso, tokens
from .models import ApiToken

_LAST_USED_RESOLUTION = timedelta(minutes=1)


def authenticate_token(raw: str) -> ApiToken:
    """The active token for ``raw`` or ``AuthenticationFailed`` saying why not. A consumer key
    (``mpk_…``) is never an API token: it is refused by name, so a service that sends its key
    to the API learns why (the gateway checks keys itself before it gets here)."""
    if raw.startswith(f"{tokens.CONSUMER_SCHEME}_"):
        raise exceptions.AuthenticationFailed(
            "Consumer keys are accepted only at /serve/<deployment>/…; call the API with a "
            "personal API token (mpt_…).", code="consumer_key_not_accepted")
    prefix = tokens.parse_prefix(raw)
    token = (ApiToken.objects.select_related("user").filter(prefix=prefix).first()
             if prefix else None)
    if token is None or not tokens.matches(raw, token.digest):
        raise exceptions.AuthenticationFailed("Invalid token.", code="token_invalid")
    if token.revoked_at is not None:
        raise exceptions.AuthenticationFailed(
            f"Token '{token.name}' was revoked on {token.revoked_at:%Y-%m-%d %H:%M} UTC.",
            code="token_revoked")
    now = timezone.now()
    if token.expires_at <= now:
        raise exceptions.AuthenticationFailed(
            f"Token '{token.name}' expired on {token.expires_at:%Y-%m-%d %H:%M} UTC.",
            code="token_expired")
    if not token.user.is_active:
        raise exceptions.AuthenticationFailed("The token's user is deactivated.",
                                              code="user_inactive")
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            raise exceptions.AuthenticationFailed(
                "HTTP Basic is accepted only on POST /api/v1/tokens/; "
                "call the API with 'Authorization: Bearer <token>'.", code="basic_not_accepted")
        if scheme.lower() != "bearer":
            return None
        value = value.strip()
        if not value or " " in value:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header; expected 'Bearer <token>'.", code="token_invalid")
        token = authenticate_token(value)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class TokenBasicAuthentication(authentication.BasicAuthentication):
    """HTTP Basic, accepted only where a script obtains its first token; brute force is
    refused with 429 after ``AXES_FAILURE_LIMIT`` failures (``teams.lockout``), and a password
    the sign-in policy does not allow (``MODELPORT_PASSWORD_LOGIN``) with 401 saying why."""

    def authenticate_credentials(self, userid, password, request=None):
        if not sso.password_form_shown():
            raise exceptions.AuthenticationFailed(sso.password_refusal(None),
                                                  code="password_login_disabled")
        try:
            user, auth = super().authenticate_credentials(userid, password, request)
        except exceptions.AuthenticationFailed:
            lockout.refuse_if_locked_out(request, {"username": userid})
            raise exceptions.AuthenticationFailed("Invalid username or password.",
                                                  code="bad_credentials") from None
        reason = sso.password_refusal(user)
        if reason:
            raise exceptions.AuthenticationFailed(
                f"{reason} Scripts use an API token ('Authorization: Bearer <token>').",
                code="password_login_disabled")
        lockout.signed_in(request, user)
        return user, auth
