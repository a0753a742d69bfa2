"""Filters shared by the jobs API and the portal's jobs list."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from .models import BatchJob, JobStatus, Trigger


class JobFilterSet(django_filters.FilterSet):
    team = django_filters.CharFilter(field_name="team__slug", label="Team (slug)")
    model = django_filters.CharFilter(field_name="model__name", label="Model (name)")
    status = django_filters.ChoiceFilter(field_name="status", choices=JobStatus.choices,
                                         label="Status")
    trigger = django_filters.ChoiceFilter(field_name="trigger", choices=Trigger.choices,
                                          label="Trigger")
    schedule = django_filters.NumberFilter(field_name="schedule_id", label="Schedule (id)")
    search = django_filters.CharFilter(method="filter_search", label="Search")

    class Meta:
        model = BatchJob
        fields = ["team", "model", "status", "trigger", "schedule", "search"]

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        """Model name, input file or URI, or the job's id."""
        q = (Q(model__name__icontains=value) | Q(input_filename__icontains=value)
             | Q(input_uri__icontains=value))
        if value.isdigit():
            q |= Q(pk=int(value))
        return queryset.filter(q)
