"""The request of a view behind ``login_required``, for annotations."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest


class AuthenticatedRequest(HttpRequest):
    """``login_required`` lets only signed-in users through: ``user`` is an account, never
    ``AnonymousUser``, so it can be used in queries. Never instantiated."""

    user: User
