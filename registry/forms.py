from __future__ import annotations

from django import forms

from teams.models import Team


class ModelCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Lowercase, e.g. fraud-detector.")
    team = forms.ModelChoiceField(queryset=Team.objects.none(), to_field_name="slug")
    description = forms.CharField(required=False)
    tags = forms.CharField(required=False, help_text="Comma-separated.")

    def __init__(self, *args, teams=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        team = self.fields["team"]
        assert isinstance(team, forms.ModelChoiceField)  # declared above
        team.queryset = teams if teams is not None else Team.objects.none()

    def clean_tags(self) -> list[str]:
        return [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]


class VersionUploadForm(forms.Form):
    file = forms.FileField(
        label="Model file",
        # hx-preserve: an htmx re-render of the form after an error keeps the chosen file.
        widget=forms.ClearableFileInput(attrs={"hx-preserve": "true",
                                               "accept": ".joblib,.pkl,.pickle,.zip,.tar.gz,"
                                                         ".tgz"}),
        help_text="A scikit-learn estimator saved with joblib or pickle (.joblib, .pkl), or an "
                  "MLflow model directory as .zip / .tar.gz. The format is told from the file.")
    format = forms.ChoiceField(
        required=False, help_text="Leave on “Detect from the file” unless detection is wrong.",
        choices=[("", "Detect from the file"), ("mlflow", "MLflow model (.zip / .tar.gz)"),
                 ("sklearn", "scikit-learn (joblib / pickle)")])
    input_example = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text='JSON, e.g. {"columns": ["a", "b"], "data": [[1, 2]]}. Required for '
                  "scikit-learn files (it gives the model its signature); an MLflow model "
                  "without one gets a row built from its signature.")
    reference_data = forms.FileField(required=False,
                                     help_text="Optional CSV/Parquet sample of training data "
                                               "(the drift baseline).")
    description = forms.CharField(required=False)


class AliasForm(forms.Form):
    alias = forms.CharField(max_length=50)
    version = forms.IntegerField(min_value=1)
