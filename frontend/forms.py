from __future__ import annotations

from typing import TypedDict

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
    """Type part of a name, username or email and pick from the matches (htmx asks
    ``search_url``); without JavaScript, typing the exact username works the same."""

    username = forms.CharField(
        max_length=150, help_text="Type part of a name, username or email, then pick the "
                                  "person from the list; or type the exact username.")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ENGINEER)

    def __init__(self, *args, search_url: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if search_url:
            self.fields["username"].widget.attrs.update({
                "autocomplete": "off", "hx-get": search_url,
                "hx-trigger": "input changed delay:250ms, search", "hx-target": "#user-matches",
                "hx-swap": "innerHTML", "hx-sync": "this:replace",
                "aria-controls": "user-matches"})


class UserCreateForm(forms.Form):
    """A new user (platform admins): who they are, how they first sign in, and optionally the
    team they join."""

    SIGN_IN_CHOICES = [("link", "Give them a one-time link to set their password"),
                       ("password", "Set an initial password myself")]

    username = forms.CharField(max_length=150, help_text="Letters, digits and @ . + - _ only.")
    email = forms.EmailField(max_length=254)
    first_name = forms.CharField(max_length=150, required=False, label="First name")
    last_name = forms.CharField(max_length=150, required=False, label="Last name")
    sign_in = forms.ChoiceField(choices=SIGN_IN_CHOICES, initial="link", label="First sign-in",
                                widget=forms.RadioSelect)
    password = forms.CharField(
        required=False, label="Initial password", strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Only with 'Set an initial password'. Tell it to them in person.")
    team = forms.ChoiceField(required=False, label="Add to team", choices=[])
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ENGINEER, label="Role in that team")

    def __init__(self, *args, teams: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        team = self.fields["team"]
        assert isinstance(team, forms.ChoiceField)  # declared above
        team.choices = [("", "No team yet")] + [(slug, slug) for slug in teams or []]

    def clean(self) -> dict:
        data = super().clean() or {}
        if data.get("sign_in") == "password" and not data.get("password"):
            self.add_error("password", "Type the initial password, or choose the one-time link.")
        if data.get("sign_in") == "link":
            data["password"] = ""
        return data


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


# --- Quotas -------------------------------------------------------------------------------------
class ResourceRequestForm(forms.Form):
    cpu = forms.DecimalField(label="More CPU (cores)", required=False, decimal_places=3,
                             initial=0, widget=forms.NumberInput(attrs={"step": "0.1"}))
    memory_mb = forms.IntegerField(label="More memory (MB)", required=False, initial=0)
    gpus = forms.IntegerField(label="More GPUs", required=False, initial=0)
    gpu_model = forms.ChoiceField(label="GPU model", required=False, choices=[])
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}),
                                    help_text="What it is for; the platform team reads this.")
    expires_at = forms.DateTimeField(
        label="Until (optional)", required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="For a temporary grant, in UTC. Leave empty for a permanent raise.")

    def __init__(self, *args, gpu_models: list[str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        models = gpu_models or []
        gpu_model = self.fields["gpu_model"]
        assert isinstance(gpu_model, forms.ChoiceField)  # declared above
        gpu_model.choices = [("", "Any")] + [(m, m) for m in models]
        if len(models) < 2:
            self.fields["gpu_model"].widget = forms.HiddenInput()


class QuotaSetForm(forms.Form):
    cpu = forms.DecimalField(label="CPU (cores)", decimal_places=3)
    memory_mb = forms.IntegerField(label="Memory (MB)")
    gpus = forms.IntegerField(label="GPUs")
    deployments = forms.IntegerField(label="Deployments")


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                              help_text="Required to deny; the requester reads it.")
    cpu = forms.DecimalField(label="CPU to grant (cores)", required=False, decimal_places=3)
    memory_mb = forms.IntegerField(label="Memory to grant (MB)", required=False)
    gpus = forms.IntegerField(label="GPUs to grant", required=False)


class HostForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=[("host", "Host"), ("pool", "Pool")])
    cpu = forms.DecimalField(label="CPU (cores)", decimal_places=3)
    memory_mb = forms.IntegerField(label="Memory (MB)")
    cpu_overcommit = forms.DecimalField(label="CPU overcommit ratio", initial=1,
                                        decimal_places=2)
    memory_overcommit = forms.DecimalField(label="Memory overcommit ratio", initial=1,
                                           decimal_places=2)
    gpus = forms.CharField(label="GPUs", required=False,
                           widget=forms.Textarea(attrs={"rows": 3}),
                           help_text="One per line: device id and model, e.g. '0 A100-80GB'.")

    def clean_gpus(self) -> list[tuple[str, str]]:
        inventory = []
        for number, line in enumerate(self.cleaned_data["gpus"].splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split(None, 1)
            if len(parts) != 2:
                raise forms.ValidationError(f"Line {number}: write the device id, a space, "
                                            "then the model.")
            inventory.append((parts[0], parts[1].strip()))
        return inventory


class PlatformSettingsChange(TypedDict):
    """The form's values as ``teams.services.update_platform_settings`` takes them."""

    package_index_url: str
    package_extra_index_urls: list[str]
    package_wheel_folder: str
    allowed_packages: list[str]
    outbound_allowlist: list[str]


class PlatformSettingsForm(forms.Form):
    """Platform settings on the capacity page (platform admins); lists one entry per line."""

    package_index_url = forms.CharField(
        label="Package index", required=False, max_length=500,
        help_text="PEP 503 index (…/simple) model environments' wheels come from. Empty: the "
                  "index this host's pip uses.")
    package_extra_index_urls = forms.CharField(
        label="Extra package indexes", required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="One URL per line (e.g. a CPU-only PyTorch index).")
    package_wheel_folder = forms.CharField(
        label="Local wheel folder", required=False, max_length=500,
        help_text="Absolute path of a folder of wheels on the platform's host, searched besides "
                  "the indexes (a mounted mirror on an air-gapped site). Empty: none.")
    allowed_packages = forms.CharField(
        label="Allowed packages", required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One name per line: the only packages model requirements (and their "
                  "dependencies) may use. Empty: any package available as a wheel.")
    outbound_allowlist = forms.CharField(
        label="Internal destinations the platform may call", required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: host, host:port, IP or CIDR (e.g. alerts.internal:8443, "
                  "10.20.0.0/16). Everything else that resolves to a loopback, private, "
                  "link-local or metadata address is refused for webhooks.")

    def cleaned_lists(self) -> PlatformSettingsChange:
        data = self.cleaned_data
        return PlatformSettingsChange(
            package_index_url=data["package_index_url"],
            package_extra_index_urls=data["package_extra_index_urls"].split(),
            package_wheel_folder=data["package_wheel_folder"],
            allowed_packages=data["allowed_packages"].split(),
            outbound_allowlist=data["outbound_allowlist"].split())
