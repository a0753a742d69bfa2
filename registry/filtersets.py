"""Filters shared by the registry API and the portal's model list."""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from .models import RegisteredModel


class RegisteredModelFilterSet(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", label="Team (slug)")
    tag = django_filters.CharFilter(method="filter_tag", label="Tag")
    alias = django_filters.CharFilter(field_name="aliases__name", label="Has alias",
                                      distinct=True)
    search = django_filters.CharFilter(method="filter_search", label="Search")

    class Meta:
        model = RegisteredModel
        fields = ["team", "tag", "alias", "search"]

    def filter_tag(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # JSON containment is PostgreSQL-only; a quoted substring works on both databases.
        return queryset.filter(tags__icontains=f'"{value}"')

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # A plain LIKE on a lower-cased column (trigram-indexed on PostgreSQL): several times
        # cheaper per row than icontains' UPPER(name) LIKE … OR UPPER(description) LIKE ….
        return queryset.filter(search_text__contains=value.lower())
