"""Portal helpers every app's pages share. Lives in core so an app's views never import
another app's views (the layers point down)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest

from core.errors import DomainError


def apply_service(request: HttpRequest, form: forms.Form | None, call: Callable[[], Any]) -> bool:
    """Run a service call; show a refusal on the form's field (or as a message) instead of a
    500. True when the call went through."""
    try:
        call()
    except DomainError as exc:
        if form is not None and exc.field and exc.field in form.fields:
            form.add_error(exc.field, exc.message)
        else:
            messages.error(request, exc.message)
        return False
    return True
