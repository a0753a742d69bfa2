"""The audit log: every mutating service calls ``record`` inside its transaction."""

from __future__ import annotations

from typing import Any, overload

from django.db import models

from core import request_context

from .models import AuditEvent, Team

_SECRET_FIELDS = {"password", "digest", "token", "secret"}


@overload
def snapshot(instance: models.Model, fields: list[str]) -> dict[str, Any]: ...
@overload
def snapshot(instance: None, fields: list[str]) -> None: ...
@overload
def snapshot(instance: models.Model | None, fields: list[str]) -> dict[str, Any] | None: ...
def snapshot(instance: models.Model | None, fields: list[str]) -> dict[str, Any] | None:
    """A JSON-safe dict of the named fields, for ``before``/``after``; never includes secrets."""
    if instance is None:
        return None
    data: dict[str, Any] = {}
    for name in fields:
        if name in _SECRET_FIELDS:
            continue
        value = getattr(instance, name)
        if isinstance(value, models.Model):
            value = str(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        elif value is not None and not isinstance(value, (str, int, float, bool, list, dict)):
            value = str(value)
        data[name] = value
    return data


def record(
    *,
    actor,
    action: str,
    obj: models.Model | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    object_repr: str | None = None,
    team: Team | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    ctx = request_context.current()
    user = actor if actor is not None and getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=user,
        actor_username=user.get_username() if user else "",
        action=action,
        object_type=object_type or (obj._meta.model_name or "" if obj is not None else ""),
        object_id=object_id if object_id is not None else (str(obj.pk) if obj is not None else ""),
        object_repr=(object_repr or (str(obj) if obj is not None else ""))[:200],
        team=team,
        team_slug=team.slug if team else "",
        before=before,
        after=after,
        request_id=ctx.request_id,
        source=ctx.source,
        ip=ctx.ip,
    )
