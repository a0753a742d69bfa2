"""The API's JSON parser (its own module: DRF imports it while its views module loads)."""

from __future__ import annotations

import re
from typing import Any

from rest_framework import exceptions, parsers

# A NUL character (PostgreSQL text and jsonb cannot hold one) or a lone UTF-16 surrogate
# ("\\ud800" in JSON: not a character, no UTF-8 encoding).
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable_location(data: Any) -> str | None:
    """Where parsed JSON holds a string the database cannot store (keys included), e.g.
    ``$.tags[2]``, or None. Iterative: a deeply nested body must not exhaust the stack here."""
    pending: list[tuple[str, Any]] = [("$", data)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                return where
        elif isinstance(value, dict):
            for key, item in value.items():
                if UNSTORABLE.search(key):
                    return where
                printable = key.encode("utf-8", "backslashreplace").decode()
                pending.append((f"{where}.{printable}", item))
        elif isinstance(value, list):
            pending.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing as 400s strings the database cannot store and bodies nested
    too deeply to parse."""

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON nested too deeply.") from None
        where = unstorable_location(data)
        if where is not None:
            raise exceptions.ParseError("NUL characters and lone surrogates (\\u0000, "
                                        f"\\ud800-\\udfff) are not allowed (at {where}).")
        return data
