"""One-time set-password links for users a platform admin created ("welcome" links).

Built on Django's password-reset tokens (``default_token_generator``): the token is an HMAC of
the user's id, password hash, last sign-in and the time it was made, so it stops working once
the password is set (one time) or after ``PASSWORD_RESET_TIMEOUT`` seconds, and nothing about
it is stored. The link is shown to the admin to hand over, and mailed only when a real email
backend is configured: the console backend would write the secret into the server's log.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.urls import reverse
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

log = logging.getLogger(__name__)

# Backends that do not deliver mail: no welcome email is "sent" through them.
_NOT_DELIVERING = ("django.core.mail.backends.console.EmailBackend",
                   "django.core.mail.backends.dummy.EmailBackend")


def welcome_path(user) -> str:
    """``/welcome/<uidb64>/<token>/`` for ``user``, valid until used or expired."""
    uidb64 = urlsafe_base64_encode(force_bytes(user.pk))
    return reverse("frontend:welcome", kwargs={"uidb64": uidb64,
                                               "token": default_token_generator.make_token(user)})


def welcome_url(user) -> str:
    return settings.MODELPORT_BASE_URL.rstrip("/") + welcome_path(user)


def email_configured() -> bool:
    return settings.EMAIL_BACKEND not in _NOT_DELIVERING


def valid_hours() -> int:
    return max(1, round(settings.PASSWORD_RESET_TIMEOUT / 3600))


def send_welcome(user) -> bool:
    """Mail ``user`` a fresh welcome link; False when not configured or the server failed (the
    admin still has the link on screen, so a down mail server never undoes the creation)."""
    if not (email_configured() and user.email):
        return False
    body = (f"An account was created for you on Modelport: username {user.get_username()}.\n\n"
            f"Set your password within {valid_hours()} hours (the link works once):\n"
            f"{welcome_url(user)}\n")
    try:
        send_mail("[Modelport] Your account", body, None, [user.email], fail_silently=False)
    except OSError:
        log.exception("could not send the welcome email to %s", user.email)
        return False
    return True
