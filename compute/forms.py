from __future__ import annotations

import json
from typing import Any

from django import forms

from .models import TargetKind


class TargetForm(forms.Form):
    """Registering an execution target in the portal; ``compute.targets`` validates the rest."""

    name = forms.SlugField(max_length=50)
    kind = forms.ChoiceField(choices=TargetKind.choices, initial=TargetKind.DOCKER)
    endpoint = forms.CharField(required=False, max_length=300,
                               help_text="Docker/Swarm: unix:///var/run/docker.sock or "
                                         "tcp://manager:2376. Empty: this machine's Docker.")
    kube_context = forms.CharField(label="Kubernetes context", required=False, max_length=200)
    in_cluster = forms.BooleanField(label="Kubernetes: in-cluster credentials", required=False)
    namespace = forms.CharField(label="Kubernetes namespace", required=False, max_length=63)
    settings = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text='JSON, e.g. {"network": "overlay", "overlay_network": "models"} or '
                  '{"network": "host", "port_range": [20000, 20999]}.')
    cpu = forms.DecimalField(label="Capacity: CPU (cores, 0 = no limit)", required=False,
                             min_value=0, decimal_places=3, initial=0)
    memory_mb = forms.IntegerField(label="Capacity: memory (MB, 0 = no limit)", required=False,
                                   min_value=0, initial=0)
    gpus = forms.IntegerField(label="Capacity: GPUs", required=False, min_value=0, initial=0)
    is_default = forms.BooleanField(label="Default target for new deployments", required=False)

    def clean_settings(self) -> dict[str, Any]:
        text = (self.cleaned_data.get("settings") or "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not JSON: {exc.msg} (line {exc.lineno}).") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("Give a JSON object, e.g. {\"network\": \"host\"}.")
        return value

    def service_values(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        for key in ("cpu", "memory_mb", "gpus"):
            if data.get(key) is None:
                data[key] = 0
        return data
