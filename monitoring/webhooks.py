"""Alert webhooks and retraining hooks: URLs an engineer writes, which the platform then calls.

Each URL is checked by ``core.netguard`` when a rule is saved (a 400 naming the reason) and
again at every delivery, because a name's DNS answer may change in between; the delivery
connects to the address it checked. What is kept on the alert (and shown in the API) is the
status code or the reason a delivery did not happen — never the destination's answer — so alert
rules cannot be used to probe what listens where.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings

from core import netguard
from core.errors import InvalidInput
from teams.services import platform_settings

MAX_URL_LENGTH = 500  # AlertRule.webhook_url / retrain_webhook_url


class Undelivered(Exception):
    """A delivery that did not succeed: ``outcome`` is what the alert keeps, ``retry`` whether
    trying again later can help (not for a refused destination or a redirect)."""

    def __init__(self, outcome: str, *, retry: bool) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.retry = retry


def allow_list() -> list[str]:
    """The destinations platform admins allow although they are internal."""
    return list(platform_settings().outbound_allowlist or [])


def check_rule_url(value: str, field: str) -> str:
    """The URL to store, or InvalidInput naming why the platform would not call it. A name
    that does not resolve now is accepted (DNS may be down for a moment); every delivery
    checks again."""
    value = (value or "").strip() if isinstance(value, str) else value
    if not value:
        return ""
    try:
        scheme = urlsplit(value).scheme.lower() if isinstance(value, str) else ""
    except ValueError:  # e.g. a bracketed host that is not an IP address
        raise InvalidInput("This is not a well-formed URL.", field=field) from None
    if scheme not in ("http", "https"):
        raise InvalidInput("Use an http:// or https:// URL.", field=field)
    if len(value) > MAX_URL_LENGTH:
        raise InvalidInput(f"The URL is longer than {MAX_URL_LENGTH} characters.", field=field)
    try:
        netguard.check_url(value, allow_list())
    except netguard.DestinationRefused as exc:
        raise InvalidInput(
            f"Refused: {exc}. The platform does not call loopback, private, link-local or "
            "metadata addresses unless a platform admin allow-lists the destination.",
            field=field) from None
    except netguard.Unreachable:
        pass
    return value


def post(url: str, payload: dict) -> str:
    """POST the payload; ``HTTP 2xx`` when delivered, else raise ``Undelivered``."""
    try:
        status = netguard.post_json(url, payload, allow=allow_list(),
                                    timeout=settings.MODELPORT_ALERT_WEBHOOK_TIMEOUT_S)
    except netguard.DestinationRefused as exc:
        raise Undelivered(f"refused: {exc}", retry=False) from None
    except netguard.Unreachable as exc:
        raise Undelivered(str(exc), retry=True) from None
    if 200 <= status < 300:
        return f"HTTP {status}"
    if 300 <= status < 400:
        raise Undelivered(f"HTTP {status}: redirects are not followed", retry=False)
    raise Undelivered(f"HTTP {status}", retry=True)
