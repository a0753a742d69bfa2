"""OpenID Connect sign-in: mozilla-django-oidc's authorization-code flow (PKCE, nonce, state)
with the endpoints from the provider's discovery document (``teams.sso``), stricter token checks
and the user matched by the provider's ``sub``.

What the library leaves open and this module closes: it decodes the ID token with
``verify_aud=False`` and requires neither ``exp`` nor ``iss``; here the token must name this
client as its audience (and ``azp`` when there are several), come from the configured issuer,
carry ``exp``/``iat``/``sub`` and be unexpired, and be signed with the expected algorithm by a
key of the provider's JWKS. The userinfo answer must be about the same ``sub``. Any failure is
a refused sign-in with the reason on the login page, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

import jwt
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
    OIDCLogoutView,
)
from requests import RequestException

from core.errors import DomainError

from . import sso, sso_accounts

log = logging.getLogger(__name__)
LEEWAY_S = 30  # clock skew between the provider and this host
_REFUSAL = "_modelport_sso_refusal"


def _settings(attr: str, *args: Any) -> Any:
    """The library's settings, with the provider's endpoints from discovery."""
    if attr.startswith("OIDC_OP_") and attr != "OIDC_OP_LOGOUT_URL_METHOD":
        provider = sso.discovery()
        return {
            "OIDC_OP_AUTHORIZATION_ENDPOINT": provider.authorization_endpoint,
            "OIDC_OP_TOKEN_ENDPOINT": provider.token_endpoint,
            "OIDC_OP_USER_ENDPOINT": provider.userinfo_endpoint,
            "OIDC_OP_JWKS_ENDPOINT": provider.jwks_uri,
        }[attr]
    return import_from_settings(attr, *args)


class ModelportOIDCBackend(OIDCAuthenticationBackend):
    """Answers only a provider's callback (``code`` and ``state``) while SSO is on; inert for
    passwords and tokens. The provider is read lazily, so a provider that is down never gets
    in the way of a break-glass password sign-in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = get_user_model()

    get_settings = staticmethod(_settings)

    # The library reads these as attributes; each comes from settings or discovery when used.
    OIDC_RP_CLIENT_ID = property(lambda self: _settings("OIDC_RP_CLIENT_ID"))
    OIDC_RP_CLIENT_SECRET = property(lambda self: _settings("OIDC_RP_CLIENT_SECRET"))
    OIDC_RP_SIGN_ALGO = property(lambda self: _settings("OIDC_RP_SIGN_ALGO", "RS256"))
    OIDC_RP_IDP_SIGN_KEY = property(lambda self: _settings("OIDC_RP_IDP_SIGN_KEY", None))
    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: _settings("OIDC_OP_TOKEN_ENDPOINT"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: _settings("OIDC_OP_USER_ENDPOINT"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: _settings("OIDC_OP_JWKS_ENDPOINT"))

    def authenticate(self, request, **kwargs):
        if request is None or not sso.enabled() or "code" not in request.GET:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, jwt.InvalidTokenError) as exc:
            return self._refuse(f"the provider's answer was refused ({exc})")
        except sso.SsoUnavailable as exc:
            return self._refuse(f"{sso.provider_name()} is unavailable: {exc}")
        except RequestException as exc:
            return self._refuse(f"{sso.provider_name()} could not be reached or refused the "
                                f"sign-in ({type(exc).__name__})")
        except DomainError as exc:
            return self._refuse(str(exc))
        except IntegrityError:  # the same first sign-in twice at once: one of them wins
            return self._refuse("this account was being created by another sign-in; try again")

    def _refuse(self, reason: str) -> None:
        log.warning("SSO sign-in refused: %s", reason)
        if not getattr(self.request, _REFUSAL, None):
            setattr(self.request, _REFUSAL, reason)
        return None

    # --- Token checks -------------------------------------------------------------------------
    def _verify_jws(self, payload, key):
        header = jwt.get_unverified_header(payload)
        algorithm = header.get("alg")
        if algorithm != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"the token is signed with {algorithm!r}, "
                                      f"expected {self.OIDC_RP_SIGN_ALGO!r}")
        client_id = self.OIDC_RP_CLIENT_ID
        try:
            claims = jwt.decode(
                payload, key, algorithms=[algorithm], audience=client_id,
                issuer=sso.issuer(), leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise SuspiciousOperation("the ID token has expired") from None
        except jwt.InvalidAudienceError:
            raise SuspiciousOperation("the ID token is not meant for this platform "
                                      "(audience)") from None
        except jwt.InvalidSignatureError:
            raise SuspiciousOperation("the ID token's signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"the ID token is invalid: {exc}") from None
        audience = claims.get("aud")
        if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
            raise SuspiciousOperation("the ID token names several audiences and another "
                                      "authorized party")
        return claims

    def retrieve_matching_jwk(self, token):
        try:
            return super().retrieve_matching_jwk(token)
        except (KeyError, jwt.PyJWKError) as exc:
            raise SuspiciousOperation(f"no usable key in the provider's JWKS ({exc})") from None

    def verify_token(self, token, **kwargs):
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"the ID token is malformed ({exc})") from None
        if algorithm != self.OIDC_RP_SIGN_ALGO:  # before any key is fetched
            raise SuspiciousOperation(f"the token is signed with {algorithm!r}, "
                                      f"expected {self.OIDC_RP_SIGN_ALGO!r}")
        return super().verify_token(token, **kwargs)

    def get_userinfo(self, access_token, id_token, payload):
        info = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(info, dict) or info.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("the userinfo answer is about another subject")
        # Claims from the (verified) ID token too: Entra ID and Okta put groups/roles there.
        return {**payload, **info}

    def verify_claims(self, claims) -> bool:
        return bool(claims.get("sub"))

    # --- Users --------------------------------------------------------------------------------
    def filter_users_by_claims(self, claims):
        subject = str(claims.get("sub") or "")
        users = self.UserModel.objects.filter(sso_identity__issuer=sso.issuer(),
                                              sso_identity__subject=subject)
        if users.exists() or not _settings("MODELPORT_OIDC_LINK_BY_EMAIL", False):
            return users
        email = claims.get("email")
        if not email or claims.get("email_verified") is not True:
            return users
        candidates = list(self.UserModel.objects.filter(email__iexact=email,
                                                        sso_identity__isnull=True)[:2])
        if len(candidates) != 1:
            return users
        sso_accounts.link_sso_identity(user=candidates[0], issuer=sso.issuer(), subject=subject)
        return self.UserModel.objects.filter(pk=candidates[0].pk)

    def create_user(self, claims):
        user = sso_accounts.create_sso_user(
            issuer=sso.issuer(), subject=str(claims.get("sub") or ""),
            email=str(claims.get("email") or ""),
            preferred_username=str(claims.get("preferred_username") or ""),
            first_name=str(claims.get("given_name") or ""),
            last_name=str(claims.get("family_name") or ""))
        return self.update_user(user, claims)

    def update_user(self, user, claims):
        if not user.is_active:
            raise SuspiciousOperation(f"the account '{user.get_username()}' is deactivated "
                                      "on this platform")
        sso_accounts.sync_sso_memberships(
            user=user, groups=sso.groups_of(claims), email=str(claims.get("email") or ""),
            first_name=str(claims.get("given_name") or ""),
            last_name=str(claims.get("family_name") or ""))
        user.refresh_from_db()
        return user

    def get_or_create_user(self, access_token, id_token, payload):
        try:
            user = super().get_or_create_user(access_token, id_token, payload)
        except SuspiciousOperation as exc:  # the library logs and drops the reason
            self._refuse(str(exc))
            raise
        if user is None:
            raise SuspiciousOperation("no account matches")
        return user

    def user_can_authenticate(self, user) -> bool:
        return bool(getattr(user, "is_active", False))

    def get_user(self, user_id):
        user = super().get_user(user_id)
        return user if user is not None and self.user_can_authenticate(user) else None


# --- Views --------------------------------------------------------------------------------------
class _SsoOnly:
    """404 while single sign-on is off; the login page with the reason when the provider's
    discovery document cannot be read."""

    get_settings = staticmethod(_settings)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not sso.enabled():
            raise Http404("Single sign-on is not configured.")
        try:
            sso.discovery()
        except sso.SsoUnavailable as exc:
            messages.error(request, f"Sign-in with {sso.provider_name()} is unavailable: {exc}")
            return redirect("login")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


class SsoLoginView(_SsoOnly, OIDCAuthenticationRequestView):
    """Sends the browser to the provider (state, nonce, PKCE S256 challenge in the session)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)  # no eager reads

    @property
    def OIDC_OP_AUTH_ENDPOINT(self) -> str:
        return sso.discovery().authorization_endpoint

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:
        return str(_settings("OIDC_RP_CLIENT_ID"))


class SsoCallbackView(_SsoOnly, OIDCAuthenticationCallbackView):
    """The provider's redirect back: code exchanged, tokens checked, user signed in."""

    def login_failure(self) -> HttpResponse:
        reason = getattr(self.request, _REFUSAL, None)
        if self.request.GET.get("error"):
            reason = (f"{sso.provider_name()} refused the sign-in: "
                      f"{self.request.GET.get('error_description') or self.request.GET['error']}")
        elif reason is None and getattr(self, "user", None) is not None:
            reason = "this account is deactivated on this platform"
        messages.error(self.request, f"Sign-in with {sso.provider_name()} failed: "
                       f"{reason or 'the answer could not be checked; try again'}.")
        return redirect("login")

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            return super().get(request)
        except SuspiciousOperation as exc:  # an unknown or replayed state
            setattr(request, _REFUSAL, str(exc))
            return self.login_failure()


class PortalLogoutView(OIDCLogoutView):
    """The portal's Log out: ends the Django session and, after an SSO sign-in, the provider's
    session too (RP-initiated logout) when the provider has an ``end_session_endpoint``."""

    get_settings = staticmethod(_settings)


def provider_logout_url(request: HttpRequest) -> str:
    """``OIDC_OP_LOGOUT_URL_METHOD``: the provider's end-session URL for a user who signed in
    with it, else the login page."""
    back = request.build_absolute_uri(reverse("login"))
    id_token = request.session.get("oidc_id_token")
    if not sso.enabled() or not id_token:
        return reverse("login")
    try:
        end_session = sso.discovery().end_session_endpoint
    except sso.SsoUnavailable:
        return reverse("login")
    if not end_session:
        return reverse("login")
    query = urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": back,
                       "client_id": _settings("OIDC_RP_CLIENT_ID")})
    return f"{end_session}{'&' if '?' in end_session else '?'}{query}"

