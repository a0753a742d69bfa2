"""Tell people something happened: an in-portal notification and an email, after commit.

Any app calls ``notify``; emails go out only once the surrounding transaction commits, so a
rolled-back change never mails anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import send_mass_mail
from django.db import transaction
from django.utils import timezone

from .models import Notification

log = logging.getLogger(__name__)


def notify(*, users: Iterable, text: str, link: str = "", kind: str = "",
           subject: str | None = None, email: bool = True) -> list[Notification]:
    """Create one notification per distinct active user and mail those with an address."""
    seen: set[int] = set()
    created: list[Notification] = []
    recipients: list[str] = []
    for user in users:
        if user is None or user.pk in seen or not user.is_active:
            continue
        seen.add(user.pk)
        created.append(Notification.objects.create(user=user, text=text[:500], link=link,
                                                   kind=kind))
        if user.email:
            recipients.append(user.email)
    if email and recipients:
        url = f"{settings.MODELPORT_BASE_URL.rstrip('/')}{link}" if link.startswith("/") \
            else link
        body = text + (f"\n\n{url}" if url else "")
        subject = subject or f"[Modelport] {_shorten(text)}"
        transaction.on_commit(lambda: _send(subject, body, recipients))
    return created


def _shorten(text: str, limit: int = 70) -> str:
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= limit else first[:limit].rsplit(" ", 1)[0] + "…"


def _send(subject: str, body: str, recipients: list[str]) -> None:
    """One message per recipient, so nobody sees who else was told."""
    messages = [(subject, body, settings.DEFAULT_FROM_EMAIL, [to]) for to in recipients]
    try:
        send_mass_mail(messages, fail_silently=False)
    except OSError:  # a down mail server must not undo or fail the change itself
        log.exception("could not send notification email to %s", recipients)


def mark_read(*, user, ids: Iterable[int] | None = None) -> int:
    """Mark the user's notifications read (all unread ones when ``ids`` is None)."""
    queryset = Notification.objects.unread().filter(user=user)
    if ids is not None:
        queryset = queryset.filter(pk__in=list(ids))
    return queryset.update(read_at=timezone.now())
