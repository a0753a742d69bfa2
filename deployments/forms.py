from __future__ import annotations

from django import forms

from teams.models import Team

from .models import STRATEGIES


class DeploymentCreateForm(forms.Form):
    name = forms.CharField(max_length=50, help_text="Lowercase letters, digits and hyphens; "
                                                    "part of the endpoint URL.")
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="slug")
    model = forms.CharField(max_length=100, help_text="Registered model name.")
    version = forms.IntegerField(required=False, help_text="Pin a version …")
    alias = forms.CharField(required=False, help_text="… or follow an alias, e.g. production.")
    replicas = forms.IntegerField(initial=1)
    cpu = forms.DecimalField(initial=1, max_digits=7, decimal_places=2, label="CPU per replica")
    memory_mb = forms.IntegerField(initial=1024, label="Memory per replica (MB)")
    strategy = forms.ChoiceField(choices=[(s, s.replace("_", "/")) for s in STRATEGIES],
                                 initial="rolling")

    def __init__(self, *args, teams=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams if teams is not None else Team.objects.none()
