"""How the CLI prints: tables for people, JSON for scripts (``--json``), progress on stderr."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = ["  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines = [line.rstrip() for line in lines]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: Any, *, columns: list[str] | None = None, text: str | None = None) \
            -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, default=str))
        elif columns is not None:
            print(table(data if isinstance(data, list) else [data], columns))
        elif text is not None:
            print(text)
        else:
            print(json.dumps(data, indent=2, default=str))

    def line(self, text: str) -> None:
        """A streamed line (a followed log): stdout for people, stderr beside ``--json``."""
        print(text, file=sys.stderr if self.as_json else sys.stdout, flush=True)

    def progress(self, message: str) -> None:
        if not self.as_json and sys.stderr.isatty():
            sys.stderr.write("\r\033[K" + message)
            sys.stderr.flush()
        elif not self.as_json:
            sys.stderr.write(message + "\n")

    def done(self) -> None:
        if not self.as_json and sys.stderr.isatty():
            sys.stderr.write("\n")


def bar(fraction: float, width: int = 30) -> str:
    filled = int(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:5.1f}%"


def json_arg(value: str | None) -> Any:
    """A JSON option: the value itself, ``@file`` or ``-`` (stdin)."""
    if value is None:
        return None
    if value == "-":
        return json.loads(sys.stdin.read())
    if value.startswith("@"):
        return json.loads(Path(value[1:]).read_text())
    return json.loads(value)
