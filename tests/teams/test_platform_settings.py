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


def test_a_local_wheel_folder_is_checked_shown_and_audited(api_as, admin_user, client,
                                                           tmp_path):
    folder = tmp_path / "wheels"
    folder.mkdir()
    answer = api_as(admin_user).patch(URL, {"package_wheel_folder": f"{folder}/"},
                                      format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["package_wheel_folder"] == str(folder)  # normalised
    event = AuditEvent.objects.get(action="platform.settings_changed")
    assert event.before["package_wheel_folder"] == ""
    assert event.after["package_wheel_folder"] == str(folder)
    client.force_login(admin_user)
    page = client.get("/capacity/").content.decode()
    assert "Local wheel folder" in page and f"<code>{folder}</code>" in page
    from workers.factory import package_policy

    assert str(folder) in package_policy().find_links  # what the next build fetches from
    # Cleared with an empty value.
    assert api_as(admin_user).patch(URL, {"package_wheel_folder": ""}, format="json").json()[
        "package_wheel_folder"] == ""


@pytest.mark.parametrize(("value", "fragment"), [
    ("wheels", "not an absolute path"),
    ("/nonexistent/wheels", "is not a folder on this host"),
])
def test_a_bad_wheel_folder_is_refused_naming_the_problem(api_as, admin_user, value, fragment):
    answer = api_as(admin_user).patch(URL, {"package_wheel_folder": value}, format="json")
    assert answer.status_code == 400
    assert fragment in str(answer.json()) and "package_wheel_folder" in str(answer.json())
    assert platform_settings().package_wheel_folder == ""
    assert not AuditEvent.objects.filter(action="platform.settings_changed").exists()


def test_an_unreadable_wheel_folder_is_refused(api_as, admin_user, tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o000)
    # Root reads everything: os.access is what decides, so it stands in for another user here.
    monkeypatch.setattr("teams.services.os.access", lambda path, mode: False)
    answer = api_as(admin_user).patch(URL, {"package_wheel_folder": str(folder)}, format="json")
    assert answer.status_code == 400 and "not readable" in str(answer.json())


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
                                        "package_wheel_folder": "",
                                        "allowed_packages": "numpy\nscikit-learn",
                                        "outbound_allowlist": "hooks.internal:8443"})
    row = platform_settings()
    assert row.allowed_packages == ["numpy", "scikit-learn"]
    assert row.outbound_allowlist == ["hooks.internal:8443"]
    assert "hooks.internal:8443" in client.get("/capacity/").content.decode()
