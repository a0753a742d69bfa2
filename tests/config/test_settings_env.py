"""Settings read the environment through typed helpers that fail loudly on bad values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings import env

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("off", False),
                                               ("", False), ("TRUE", True)])
def test_env_bool_accepts_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("X_FLAG", raw)
    assert env.env_bool("X_FLAG", not expected) is expected


def test_env_bool_rejects_anything_else_naming_the_variable(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG='maybe' is not a boolean"):
        env.env_bool("X_FLAG", False)


def test_env_int_checks_type_and_bounds(monkeypatch):
    monkeypatch.setenv("X_INT", "ten")
    with pytest.raises(ImproperlyConfigured, match="X_INT='ten' is not an integer"):
        env.env_int("X_INT", 1)
    monkeypatch.setenv("X_INT", "0")
    with pytest.raises(ImproperlyConfigured, match="below the minimum 1"):
        env.env_int("X_INT", 5, minimum=1)


def test_env_choice_lists_the_allowed_values(monkeypatch):
    monkeypatch.setenv("X_RUNTIME", "podman")
    with pytest.raises(ImproperlyConfigured, match="must be one of: auto, docker, local"):
        env.env_choice("X_RUNTIME", "auto", ("auto", "docker", "local"))


def test_env_port_range_parses_and_validates(monkeypatch):
    monkeypatch.setenv("X_PORTS", "21000-21010")
    assert env.env_port_range("X_PORTS", (1, 2)) == (21000, 21010)
    monkeypatch.setenv("X_PORTS", "9-3")
    with pytest.raises(ImproperlyConfigured):
        env.env_port_range("X_PORTS", (1, 2))


def test_required_variable_missing_says_which(monkeypatch):
    monkeypatch.delenv("X_REQUIRED", raising=False)
    with pytest.raises(ImproperlyConfigured, match="Set the X_REQUIRED environment variable"):
        env.env_str("X_REQUIRED")


def _manage(args: list[str], extra_env: dict[str, str], tmp_path: Path) \
        -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("DJANGO_", "MODELPORT_"))}
    environment.update({"MODELPORT_DATA_DIR": str(tmp_path), **extra_env})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=120)


PRODUCTION = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "k" * 10 + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ",
    "DJANGO_ALLOWED_HOSTS": "modelport.example.com",
}


def test_production_settings_pass_check_deploy_with_no_warnings(tmp_path):
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], PRODUCTION, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_collectstatic_builds_the_manifest(tmp_path):
    """The compose web container runs collectstatic with WhiteNoise's manifest storage, which
    fails on any reference to a file that is not shipped (e.g. a vendored script's source
    map)."""
    result = _manage(["collectstatic", "--noinput"], PRODUCTION, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    manifest = (tmp_path / "static" / "staticfiles.json").read_text()
    # The API docs' Swagger UI and ReDoc (drf-spectacular-sidecar) are collected too.
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in manifest
    assert "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js" in manifest


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    environment = {k: v for k, v in PRODUCTION.items() if k != "DJANGO_SECRET_KEY"}
    result = _manage(["check"], environment, tmp_path)
    assert result.returncode != 0
    assert "Set the DJANGO_SECRET_KEY environment variable" in result.stderr


def test_a_typo_in_a_setting_stops_start_up_loudly(tmp_path):
    result = _manage(["check"], {"MODELPORT_RUNTIME": "dokcer"}, tmp_path)
    assert result.returncode != 0
    assert "MODELPORT_RUNTIME='dokcer' must be one of" in result.stderr
