"""Typed readers for environment variables: the only place settings look at ``os.environ``.

Every helper raises ``ImproperlyConfigured`` naming the variable and the bad value, so a typo in a
deployment fails loudly at start-up instead of silently falling back to a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_MISSING = object()


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None else value.strip()


def env_str(name: str, default: str | object = _MISSING) -> str:
    value = _raw(name)
    if value is None or value == "":
        if default is _MISSING:
            raise ImproperlyConfigured(f"Set the {name} environment variable.")
        return default  # type: ignore[return-value]
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off."
    )


def env_int(name: str, default: int, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}.")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum {maximum}.")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}.")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_combinations(name: str, default: list[str], parts: tuple[str, ...]) -> list[list[str]]:
    """Comma-separated alternatives, each one part or several joined by ``+``
    (``username+ip_address,ip_address``): a list of lists of allowed parts."""
    combos = [[part.strip() for part in item.split("+")] for item in env_list(name, default)]
    for combo in combos:
        unknown = [part for part in combo if part not in parts]
        if unknown or not combo:
            raise ImproperlyConfigured(
                f"{name}: {'+'.join(combo)!r} is not valid; join {', '.join(parts)} with '+' and "
                "separate alternatives with ','.")
    if not combos:
        raise ImproperlyConfigured(f"{name} must name at least one of: {', '.join(parts)}.")
    return combos


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of: {', '.join(choices)}.")
    return value


def env_pattern(name: str, default: str, pattern: str, hint: str) -> str:
    """A string that must match ``pattern`` whole (when set): e.g. a name used in queue and
    container names. ``hint`` says what is allowed."""
    value = env_str(name, default)
    if value and not re.fullmatch(pattern, value):
        raise ImproperlyConfigured(f"{name}={value!r} is not valid: {hint}.")
    return value


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    return (Path(value) if value else default).expanduser().resolve()


def env_port_range(name: str, default: tuple[int, int]) -> tuple[int, int]:
    value = _raw(name)
    if not value:
        return default
    try:
        low_text, high_text = value.split("-", 1)
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} must look like 20000-20999.") from None
    if not (1024 <= low <= high <= 65535):
        raise ImproperlyConfigured(
            f"{name}={value!r} must be an ascending range within 1024-65535.")
    return low, high


def env_group_map(name: str, roles: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """``group=team/role`` entries, comma-separated, as ``(group, team, role)``. A group name
    may hold colons (``ml-search:maintainer``); ``=`` and ``/`` separate the parts."""
    value = _raw(name) or ""
    entries: list[tuple[str, str, str]] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            continue
        group, sep, target = item.rpartition("=")
        team, slash, role = target.partition("/")
        group, team, role = group.strip(), team.strip(), role.strip()
        if not sep or not slash or not group or not team or not role:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not 'group=team-slug/role' "
                "(e.g. ml-search:maintainer=search/maintainer).")
        if role not in roles:
            raise ImproperlyConfigured(
                f"{name}: {item!r} names role {role!r}; use one of {', '.join(roles)}.")
        entries.append((group, team, role))
    return entries
