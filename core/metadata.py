"""What ``OPTIONS`` on an API route answers (DRF's ``DEFAULT_METADATA_CLASS``).

Its own module: DRF imports it while defining ``APIView``, so it must not import
``rest_framework.views`` (``core.rest`` does).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.metadata import SimpleMetadata
from rest_framework.request import clone_request

from .errors import DomainError


class Metadata(SimpleMetadata):
    """``OPTIONS`` describes what may be sent; it never looks an object up.

    DRF's ``SimpleMetadata`` calls ``view.get_object()`` for PUT to test object permissions.
    Here objects are resolved through services (domain errors), some views have no ``queryset``
    and some lookups are not model fields — so that probe raised ``AssertionError`` or
    ``FieldError`` (500s on the alias and quota routes). Roles are enforced by the services on
    the real request; OPTIONS keeps only the view-level permission check.
    """

    def determine_actions(self, request: Any, view: Any) -> dict[str, Any]:
        actions: dict[str, Any] = {}
        for method in sorted({"PUT", "POST"} & set(view.allowed_methods)):
            view.request = clone_request(request, method)
            try:
                view.check_permissions(view.request)
                serializer = view.get_serializer()
            except (exceptions.APIException, DjangoPermissionDenied, Http404, DomainError):
                continue
            finally:
                view.request = request
            actions[method] = self.get_serializer_info(serializer)
        return actions
