"""Admin helpers every app's console pages share (kept in core so admin modules never import
each other)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.http import HttpRequest, HttpResponseRedirect

from core.errors import DomainError


class ServiceErrorsMixin:
    """A save refused by a service rolls back the whole form and shows the service's message
    instead of a 500."""

    def changeform_view(self, request: HttpRequest, object_id: str | None = None,
                        form_url: str = "", extra_context: dict[str, Any] | None = None):
        try:
            with transaction.atomic():
                return super().changeform_view(  # type: ignore[misc]
                    request, object_id, form_url, extra_context)
        except DomainError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.get_full_path())


class ReadOnlyInline(admin.TabularInline):
    """Rows the console shows beside their parent and never edits: only services change them
    (a deployment's revisions, a job's chunks)."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
