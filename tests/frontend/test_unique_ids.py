"""Every id on a page is unique and every <label for> names a field that exists: the quota page
once had two forms with the same ids (``id_cpu``…), so the Set-quota fields lost their labels,
and a hidden "GPU model" field kept a label with nothing to name."""

from __future__ import annotations

from collections import Counter
from html.parser import HTMLParser

import pytest
from django.test import Client

from .conftest import make_deployment, make_model

pytestmark = pytest.mark.django_db


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: Counter[str] = Counter()
        self.label_for: list[str] = []
        self.visible_fields: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids[a["id"] or ""] += 1
        if tag == "label" and a.get("for"):
            self.label_for.append(a["for"] or "")
        if tag in ("input", "select", "textarea", "meter", "progress", "output") \
                and a.get("type") != "hidden" and a.get("id"):
            self.visible_fields.add(a["id"] or "")


@pytest.mark.parametrize("path", ["/teams/ml-search/quota/", "/teams/ml-search/", "/teams/",
                                  "/tokens/", "/resource-requests/", "/models/churn/",
                                  "/deployments/churn-prod/", "/capacity/"])
def test_ids_are_unique_and_labels_name_visible_fields(path, team, admin_user):
    make_deployment(make_model(team, "churn"), "churn-prod")
    client = Client()
    client.force_login(admin_user)
    response = client.get(path)
    assert response.status_code == 200
    parser = _Ids()
    parser.feed(response.content.decode())
    assert [i for i, n in parser.ids.items() if n > 1] == [], path
    orphans = [f for f in parser.label_for if f not in parser.visible_fields]
    assert orphans == [], f"{path}: labels naming no visible field: {orphans}"
