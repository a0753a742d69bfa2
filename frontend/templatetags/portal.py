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


def _v2_datatype(values: list) -> str | None:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP64"
    if all(isinstance(v, str) for v in values):
        return "BYTES"
    return None


@register.filter
def v2_request(example) -> str:
    """An input example (``dataframe_split``, as JSON text or a dict) as an Open Inference
    Protocol (v2) request body, one input per column; '' when it has no such form."""
    try:
        body = json.loads(example) if isinstance(example, str) else example
        columns, rows = body["dataframe_split"]["columns"], body["dataframe_split"]["data"]
        inputs = []
        for index, column in enumerate(columns):
            values = [row[index] for row in rows]
            datatype = _v2_datatype(values)
            if datatype is None or not values:
                return ""
            inputs.append({"name": str(column), "shape": [len(values)], "datatype": datatype,
                           "data": values})
    except (TypeError, KeyError, IndexError, ValueError):
        return ""
    return json.dumps({"inputs": inputs}, separators=(", ", ": "))
