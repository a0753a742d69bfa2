"""This installation's id (``teams.models.Installation``): what the runtimes label every object
they create with, so two installations sharing a Docker Engine, a Swarm or a Kubernetes
namespace never list, adopt or remove each other's replicas (docs/security.md)."""

from __future__ import annotations

import uuid

from django.db import IntegrityError, transaction

from .models import Installation


def new_uid() -> str:
    return uuid.uuid4().hex


def installation_id() -> str:
    """The id, read from the database each call (one indexed row: cheap next to what a runtime
    does with it, and always what every other process of this installation reads); created
    on first use when the migration's row is missing (a flushed test database)."""
    uid = Installation.objects.filter(pk=1).values_list("uid", flat=True).first()
    if uid:
        return uid
    try:
        with transaction.atomic():
            row, _ = Installation.objects.get_or_create(pk=1, defaults={"uid": new_uid()})
    except IntegrityError:  # another process created it a moment ago
        row = Installation.objects.get(pk=1)
    return row.uid
