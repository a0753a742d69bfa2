"""Filters shared by the deployments API and the portal list."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from .models import Deployment


class DeploymentFilterSet(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", label="Team (slug)")
    model = django_filters.CharFilter(field_name="model__name", label="Model (name)")
    status = django_filters.CharFilter(field_name="status", label="Status")
    search = django_filters.CharFilter(method="filter_search", label="Search")

    class Meta:
        model = Deployment
        fields = ["team", "model", "status", "search"]

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(Q(name__icontains=value) | Q(model__name__icontains=value))
