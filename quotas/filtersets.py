"""Filters shared by the API and the portal."""

from __future__ import annotations

import django_filters

from .models import ResourceRequest


class ResourceRequestFilterSet(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", label="Team (slug)")
    status = django_filters.ChoiceFilter(choices=ResourceRequest.Status.choices)

    class Meta:
        model = ResourceRequest
        fields = ["team", "status"]
