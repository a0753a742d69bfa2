from __future__ import annotations

import json
from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def lookup(mapping: dict, key):
    """``{{ my_roles|lookup:team.pk }}``: a dict value by a variable key."""
    return mapping.get(key) if mapping else None


@register.filter
def amount(value):
    """Decimal('1.500') → '1.5', Decimal('8.000') → '8'; other values unchanged."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value


@register.filter
def amount_fraction(value, fraction: str):
    """A fraction of a limit, for <meter low/high>."""
    try:
        return amount(Decimal(str(value)) * Decimal(fraction))
    except (ArithmeticError, ValueError):
        return 0


@register.filter
def as_json(value) -> str:
    """A value as compact JSON text (for copy-paste snippets); '' for None."""
    if value in (None, ""):
        return ""
    return json.dumps(value, separators=(", ", ": "))
