"""Filters shared by the API and the portal."""

from __future__ import annotations

import django_filters

from .models import AuditEvent, Team


class TeamFilterSet(django_filters.FilterSet):
    class Meta:
        model = Team
        fields: list[str] = []


class AuditEventFilterSet(django_filters.FilterSet):
    actor = django_filters.CharFilter(field_name="actor_username", label="Actor (username)")
    team = django_filters.CharFilter(field_name="team_slug", label="Team (slug)")
    action = django_filters.CharFilter(method="filter_action", label="Action (prefix)")
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte",
                                             label="Since (ISO 8601)")
    until = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt",
                                             label="Until (ISO 8601)")
    object_type = django_filters.CharFilter(field_name="object_type")
    request_id = django_filters.CharFilter(field_name="request_id")

    class Meta:
        model = AuditEvent
        fields = ["actor", "team", "action", "since", "until", "object_type", "request_id"]

    def filter_action(self, queryset, name, value):
        """``team`` matches team.created, team.updated …; a full name matches exactly."""
        if "." in value:
            return queryset.filter(action=value)
        return queryset.filter(action__startswith=f"{value}.")
