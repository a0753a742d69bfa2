from __future__ import annotations

from django import forms
from django.conf import settings
from django.core.validators import MaxValueValidator

from teams.roles import Role


class TeamCreateForm(forms.Form):
    slug = forms.SlugField(max_length=50, help_text="Lowercase letters, digits and hyphens.")
    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class TeamEditForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ENGINEER)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class TokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, e.g. 'ci-pipeline'.")
    expires_in_days = forms.IntegerField(
        min_value=1, initial=30, label="Expires in (days)",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        limit = settings.MODELPORT_TOKEN_MAX_DAYS
        field = self.fields["expires_in_days"]
        field.validators.append(MaxValueValidator(limit))
        field.widget.attrs["max"] = limit
        field.help_text = f"At most {limit} days."
