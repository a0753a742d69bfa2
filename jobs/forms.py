"""The portal's "Run a batch job" form. It only shapes what was typed into the arguments of
``schedules.run_job`` / ``services.create_job``; every rule (the file, the signature, quotas,
roles) is checked there, for the API and the portal alike."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from django import forms

from teams.models import Team

from .models import OutputFormat


class JobRunForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="slug")
    model = forms.CharField(max_length=100, help_text="Registered model name.")
    version = forms.IntegerField(required=False, min_value=1, help_text="A version …")
    alias = forms.CharField(required=False, max_length=50,
                            help_text="… or an alias, e.g. production.")
    input = forms.FileField(required=False, label="Input file (CSV or Parquet)",
                            help_text="A CSV with a header row, or a Parquet file; its columns "
                                      "must match the model's input signature.")
    input_uri = forms.CharField(required=False, max_length=500, label="… or input in storage",
                                help_text="artifacts:/<name>, or jobs:/<id>/output of an "
                                          "earlier job.")
    cpu = forms.DecimalField(initial=1, min_value=Decimal("0.1"), max_digits=7,
                             decimal_places=2, label="CPU per chunk container")
    memory_mb = forms.IntegerField(initial=1024, min_value=128,
                                   label="Memory per chunk container (MB)")
    gpus = forms.IntegerField(initial=0, min_value=0, required=False,
                              label="GPUs per chunk container")
    parallelism = forms.IntegerField(initial=1, min_value=1, max_value=32,
                                     help_text="Chunks scored at the same time (each counts "
                                               "against the team's quota).")
    output_format = forms.ChoiceField(choices=OutputFormat.choices, initial="parquet",
                                      label="Output format")
    output_columns = forms.CharField(required=False, label="Output columns",
                                     help_text="Input columns to keep next to each prediction, "
                                               "comma-separated (e.g. an id).")
    schedule = forms.CharField(required=False, max_length=100, label="Repeat on (cron, UTC)",
                               help_text="Optional, 5 fields, e.g. 0 2 * * * for 02:00 daily.")

    def __init__(self, *args: Any, teams: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        team = cast(forms.ModelChoiceField, self.fields["team"])
        team.queryset = teams if teams is not None else Team.objects.none()

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("input") and not data.get("input_uri"):
            self.add_error("input", "Choose a CSV or Parquet file (or give an input in "
                                    "storage).")
        elif data.get("input") and data.get("input_uri"):
            self.add_error("input_uri", "Give a file or an input in storage, not both.")
        if data.get("version") and data.get("alias"):
            self.add_error("alias", "Give a version or an alias, not both.")
        elif not data.get("version") and not data.get("alias"):
            self.add_error("version", "Give a version or an alias.")
        return data

    def job_args(self) -> dict[str, Any]:
        """Keyword arguments for ``schedules.run_job``."""
        data = self.cleaned_data
        columns = [c.strip() for c in (data.get("output_columns") or "").split(",")
                   if c.strip()]
        return {"model": data["model"], "version": data.get("version"),
                "alias": data.get("alias") or None, "input_file": data.get("input"),
                "input_uri": data.get("input_uri") or None,
                "output_format": data["output_format"],
                "resources": {"cpu": float(data["cpu"]), "memory_mb": data["memory_mb"],
                              "gpus": data.get("gpus") or 0},
                "parallelism": data["parallelism"], "output_columns": columns or None,
                "cron": data.get("schedule") or ""}

    def add_service_error(self, field: str | None, message: str) -> None:
        """A service's refusal: at the top, and next to the field it names."""
        self.add_error(None, message)
        target = {"resources": "cpu", "input_file": "input", "file": "input",
                  "cron": "schedule", "schedule_name": "schedule"}.get(field or "", field)
        if target in self.fields:
            self.add_error(target, message)
