"""Platform settings: read by everyone signed in, changed by platform admins only, audited."""

from __future__ import annotations

import pytest

from teams.models import AuditEvent, PlatformSettings
from teams.services import platform_settings

pytestmark = pytest.mark.django_db

URL = "/api/v1/platform/settings/"


def test_defaults_are_empty_and_readable_by_any_member(api_as, viewer):
    answer = api_as(viewer).get(URL)
    assert answer.status_code == 200
    body = answer.json()
    assert body["package_index_url"] == ""
    assert body["allowed_packages"] == [] and body["outbound_allowlist"] == []


def test_platform_admin_changes_settings_and_it_is_audited(api_as, admin_user):
    answer = api_as(admin_user).patch(URL, {
        "package_index_url": "https://pypi.internal/simple",
        "allowed_packages": ["Scikit_Learn", "numpy", "numpy"],
        "outbound_allowlist": ["alerts.internal:8443", "10.20.0.0/16", "127.0.0.1"],
    }, format="json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["allowed_packages"] == ["numpy", "scikit-learn"]  # canonical, de-duplicated
    assert body["outbound_allowlist"] == ["alerts.internal:8443", "10.20.0.0/16",
                                          "127.0.0.1/32"]
    assert body["updated_by"] == admin_user.username
    event = AuditEvent.objects.get(action="platform.settings_changed")
    assert event.before["package_index_url"] == ""
    assert event.after["package_index_url"] == "https://pypi.internal/simple"


@pytest.mark.parametrize("role", ["maintainer", "engineer", "viewer"])
def test_team_roles_cannot_change_settings(api_as, request, role):
    user = request.getfixturevalue(role)
    answer = api_as(user).patch(URL, {"outbound_allowlist": ["127.0.0.1"]}, format="json")
    assert answer.status_code == 403
    assert platform_settings().outbound_allowlist == []
    assert not AuditEvent.objects.filter(action="platform.settings_changed").exists()


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("package_index_url", "ftp://mirror/simple", "not an http(s) URL"),
    ("allowed_packages", ["scikit learn!"], "not a Python package name"),
    ("outbound_allowlist", ["10.0.0.0/33"], "not a host name"),
    ("outbound_allowlist", ["hooks.internal:99999"], "port must be a number"),
])
def test_bad_values_are_refused_naming_the_problem(api_as, admin_user, field, value, fragment):
    answer = api_as(admin_user).patch(URL, {field: value}, format="json")
    assert answer.status_code == 400
    assert fragment in str(answer.json())
    assert PlatformSettings.objects.filter(pk=1).first() in (None, platform_settings())
    assert platform_settings().outbound_allowlist == []


def test_capacity_page_shows_settings_and_admins_edit_them(client, admin_user, viewer):
    client.force_login(viewer)
    page = client.get("/capacity/").content.decode()
    assert "Platform settings" in page and "Save settings" not in page
    assert client.post("/capacity/settings/", {"outbound_allowlist": "127.0.0.1"}).status_code \
        == 302
    assert platform_settings().outbound_allowlist == []  # refused with a message
    client.force_login(admin_user)
    assert "Save settings" in client.get("/capacity/").content.decode()
    client.post("/capacity/settings/", {"package_index_url": "",
                                        "package_extra_index_urls": "",
                                        "allowed_packages": "numpy\nscikit-learn",
                                        "outbound_allowlist": "hooks.internal:8443"})
    row = platform_settings()
    assert row.allowed_packages == ["numpy", "scikit-learn"]
    assert row.outbound_allowlist == ["hooks.internal:8443"]
    assert "hooks.internal:8443" in client.get("/capacity/").content.decode()
