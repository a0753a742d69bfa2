"""What a model's ``requirements.txt`` may contain: names, extras, version specifiers, markers.

A model environment is built from wheels the platform fetches from its configured package index
(``wheelhouse.py``). Every other form pip understands would either run someone's code while the
image is built (an sdist's build backend, a VCS checkout, a local project) or fetch from
somewhere the platform did not choose (a direct URL, ``--index-url``, ``--find-links``), so each
is refused here, naming the line, before anything is fetched. Django-free: the registry calls it
at upload time and the image builder again before every build.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement

FORM = "name[extras] specifier ; marker, e.g. scikit-learn==1.9.1"
_COMMENT = re.compile(r"(^|\s+)#.*$")
_VCS = re.compile(r"^(git|hg|svn|bzr)\+", re.IGNORECASE)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_OPTION_IN_LINE = re.compile(r"(^|\s)--?[A-Za-z]")
_ARCHIVE = re.compile(r"\.(whl|tar\.gz|tgz|tar\.bz2|tar|zip)$", re.IGNORECASE)
_INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index",
                  "--trusted-host")
_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")


class RequirementRefused(ValueError):
    """One or more lines of a model's requirements are not plain requirements."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:5]
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__("; ".join(shown) + more + ". A model's requirements may only name "
                         f"packages ({FORM}); the platform installs them from wheels of its "
                         "configured package index.")


def _logical_lines(lines: Iterable[str]) -> list[tuple[int, str]]:
    """(first line number, text) with comments removed and ``\\`` continuations joined, as pip
    reads a requirements file."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\r\n")
        if pending is not None:
            number, text = pending[0], pending[1] + text
            pending = None
        if text.endswith("\\"):
            pending = (number, text[:-1])
            continue
        text = _COMMENT.sub("", text).strip()
        if text:
            out.append((number, text))
    if pending is not None and pending[1].strip():
        out.append((pending[0], _COMMENT.sub("", pending[1]).strip()))
    return out


def _option_reason(text: str) -> str:
    option = text.split("=", 1)[0].split()[0]
    if option in ("-e", "--editable"):
        return "editable installs (-e) are not allowed"
    if option in _FILE_OPTIONS or any(option.startswith(o) and len(o) == 2 for o in ("-r", "-c")):
        return "references to other requirement or constraint files are not allowed"
    if option in _INDEX_OPTIONS or option.startswith(("-i", "-f")):
        return ("package indexes and find-links are a platform setting, not part of a model "
                "(ask a platform admin)")
    return f"pip options ({option}) are not allowed"


def line_problem(text: str) -> str | None:
    """Why this (comment-free, non-empty) line is refused, or None when it is a plain
    requirement."""
    if text.startswith("-"):
        return _option_reason(text)
    if _VCS.match(text) or re.search(r"@\s*(git|hg|svn|bzr)\+", text, re.IGNORECASE):
        return "VCS links are not allowed"
    if text.lower().startswith("file:") or re.search(r"@\s*file:", text, re.IGNORECASE):
        return "local files (file:) are not allowed"
    if _URL.match(text):
        return "direct URLs are not allowed"
    if "@" in text.split(";")[0]:
        with contextlib.suppress(InvalidRequirement):
            if Requirement(text).url:
                return "direct URL references (name @ URL) are not allowed"
    head = text.split(";")[0].strip()
    if text.startswith((".", "/", "~", "\\")) or ("/" in head and "@" not in head) \
            or _ARCHIVE.search(head):
        return "local paths and archives are not allowed"
    if _OPTION_IN_LINE.search(text):
        return "per-requirement pip options (--hash, --config-settings …) are not allowed"
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        return f"not a requirement of the form {FORM} ({str(exc).splitlines()[0]})"
    if requirement.url:
        return "direct URL references (name @ URL) are not allowed"
    return None


def check_requirements(lines: Iterable[str], *, source: str = "requirements.txt") -> list[str]:
    """The requirement lines of a requirements file (comments and blank lines dropped), or
    RequirementRefused naming every refused line by number and text."""
    accepted: list[str] = []
    problems: list[str] = []
    for number, text in _logical_lines(lines):
        problem = line_problem(text)
        if problem:
            shown = text if len(text) <= 120 else text[:117] + "..."
            problems.append(f"{source} line {number} {shown!r}: {problem}")
        else:
            accepted.append(text)
    if problems:
        raise RequirementRefused(problems)
    return accepted
