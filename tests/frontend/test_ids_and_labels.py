"""Every id on a page is unique and every <label for> names a control that exists — two forms
on one page (the quota page's request and set-quota forms) once shared id_cpu, id_memory_mb
and id_gpus, so the second form's fields lost their labels; a hidden field kept its label."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser

import pytest
from django.test import Client

from compute import inventory

from .conftest import make_deployment, make_model

LABELABLE = {"input", "select", "textarea", "meter", "output", "progress", "button"}


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: Counter[str] = Counter()
        self.controls: dict[str, str] = {}  # id → type of labelable element
        self.label_for: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"]] += 1
            if tag in LABELABLE:
                self.controls[a["id"]] = a.get("type") or tag
        if tag == "label" and a.get("for"):
            self.label_for.append(a["for"])


def check(html: str, path: str) -> None:
    parser = _Ids()
    parser.feed(html)
    duplicated = sorted(i for i, n in parser.ids.items() if n > 1)
    assert not duplicated, f"{path}: ids used more than once: {duplicated}"
    dangling = [f for f in parser.label_for if f not in parser.controls]
    assert not dangling, f"{path}: labels for no control: {dangling}"
    hidden = [f for f in parser.label_for if parser.controls[f] == "hidden"]
    assert not hidden, f"{path}: labels for hidden inputs: {hidden}"


@pytest.mark.django_db
@pytest.mark.parametrize("gpu_models", [["A100-80GB"], ["A100-80GB", "T4"]])
@pytest.mark.parametrize("path", ["/teams/ml-search/quota/", "/teams/ml-search/", "/teams/",
                                  "/tokens/", "/resource-requests/", "/models/churn/",
                                  "/deployments/churn-prod/", "/capacity/"])
def test_ids_are_unique_and_labels_point_at_controls(path, gpu_models, team, admin_user):
    inventory.register_host(actor=admin_user, name="gpu-1", cpu=64, memory_mb=262144,
                            gpus=[(str(n), m) for n, m in enumerate(gpu_models)])
    make_deployment(make_model(team, "churn"), "churn-prod")
    client = Client()
    client.force_login(admin_user)
    response = client.get(path)
    assert response.status_code == 200
    check(response.content.decode(), path)


@pytest.mark.django_db
def test_quota_page_labels_both_forms(team, admin_user):
    client = Client()
    client.force_login(admin_user)
    html = client.get(f"/teams/{team.slug}/quota/").content.decode()
    for field in ("cpu", "memory_mb", "gpus"):
        assert f'<label for="id_request-{field}">' in html
        assert f'<label for="id_quota-{field}">' in html
