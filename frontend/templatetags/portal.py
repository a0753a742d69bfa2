from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def lookup(mapping: dict, key):
    """``{{ my_roles|lookup:team.pk }}``: a dict value by a variable key."""
    return mapping.get(key) if mapping else None
