"""Every dotted path into the project that settings name can be imported. ``manage.py check``
misses the lazy ones (AXES callables, upload handlers, REST_FRAMEWORK classes, schema enums,
the CSRF failure view), so moving a module (issue 17) would otherwise break only at run time.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from django.conf import settings
from django.utils.module_loading import import_string

from tests.config.test_celery_task_names import registered_names

APP_PACKAGES = {"config", "core", "teams", "notifications", "registry", "quotas", "compute",
                "workers", "deployments", "monitoring", "gateway", "frontend", "demo",
                "serving"}
DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def _paths(value: Any, setting: str, found: set[tuple[str, str]]) -> None:
    if type(value) is str:
        if DOTTED.match(value) and value.split(".")[0] in APP_PACKAGES:
            found.add((setting, value))
    elif isinstance(value, dict):
        for key, item in value.items():
            _paths(key, setting, found)
            _paths(item, setting, found)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _paths(item, setting, found)


def project_paths() -> list[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for name in dir(settings):
        if name.isupper():
            _paths(getattr(settings, name), name, found)
    return sorted(found)


def test_the_scan_sees_the_lazy_settings():
    settings_seen = {setting for setting, _ in project_paths()}
    assert {"MIDDLEWARE", "REST_FRAMEWORK", "AXES_CLIENT_IP_CALLABLE", "FILE_UPLOAD_HANDLERS",
            "CSRF_FAILURE_VIEW", "SPECTACULAR_SETTINGS", "CELERY_BEAT_SCHEDULE"} <= settings_seen


@pytest.mark.parametrize(("setting", "path"), project_paths())
def test_dotted_path_in_settings_imports(setting, path):
    if setting == "CELERY_BEAT_SCHEDULE" and path in registered_names():
        return  # a task's name, kept when its module moves (test_celery_task_names.py)
    try:
        importlib.import_module(path)
    except ImportError:
        import_string(path)  # a class, function or object in a module; raises if it moved
