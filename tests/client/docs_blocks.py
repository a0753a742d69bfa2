"""The fenced command blocks of a markdown page, as ``tests/client/test_docs_run.py`` runs them.

A command block is a fence tagged ``sh``, ``bash``, ``shell`` or ``python``, or a ``yaml`` fence
holding a CI job (its ``script:`` lines). Other fences (``text``, ``json``, output samples) are
not commands. An HTML comment on the line right above a fence says how to treat it:

- ``<!-- not-run: reason -->``: not run here (the reason is shown in the test's output);
- ``<!-- exit: N (reason) -->``: run, and it must exit ``N`` (a documented failure).

Every fence names its language, so a command cannot hide in an untagged one: ``text`` for
output samples and diagrams, ``json``/``yaml``/``toml``/``ini`` for files and bodies (not
commands; a ``yaml`` fence with a CI job's ``script:`` is the one exception). ``RUN_BY`` names
the test that runs each page's command blocks; ``test_docs_blocks`` fails when a page has a
command block that no test runs and no not-run marker excuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

SHELL = ("sh", "bash", "shell")
# The pages whose command blocks a test runs, in order and as written, and that test.
RUN_BY = {
    "client.md": "test_docs_run.py::test_docs_client_md_runs_as_written",
    "serving.md": "test_docs_run.py::test_docs_client_md_runs_as_written",  # its iris-prod
    "ci-example.md": "test_docs_run.py::test_docs_ci_example_md_runs_as_written",
    **{page: "test_docs_pages.py::test_account_and_quota_pages_run_as_written"
       for page in ("software-engineer.md", "platform-engineer.md", "quotas.md",
                    "monitoring.md")},
}
# Pages whose command blocks no test runs yet (issue 25 asks for every page): the list may only
# shrink, so a page on it that needs nothing more is an error too.
NOT_YET_RUN = ("beyond-one-host.md", "deployments.md", "registry.md")
FENCE = re.compile(r"^( *)```(\w*)\s*$")  # indented too: a fence inside a list item
MARKER = re.compile(r"^<!--\s*(not-run|exit):\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str  # sh, python or ci (a CI job's script, run by bash)
    text: str
    not_run: str | None = None
    exit_code: int = 0
    env: dict[str, str] | None = None  # a CI job's variables

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every command block of ``path``, in order."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        start, indent, lang = i, len(opened.group(1)), opened.group(2)
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].lstrip().startswith("```"):
            body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i].lstrip())
            i += 1
        i += 1
        block = _block(path, start, lang, "\n".join(body) + "\n",
                       lines[start - 1] if start else "")
        if block is not None:
            found.append(block)
    return found


def _block(path: Path, start: int, lang: str, text: str, above: str) -> Block | None:
    if lang in SHELL:
        block = Block(path, start + 1, "sh", text)
    elif lang == "python":
        block = Block(path, start + 1, "python", text)
    elif lang in ("yaml", "yml"):
        job = _ci_job(text)
        if job is None:
            return None
        script, env = job
        block = Block(path, start + 1, "ci", script, env=env)
    else:
        return None
    marker = MARKER.match(above.strip())
    if marker and marker.group(1) == "not-run":
        block.not_run = marker.group(2)
    elif marker:
        block.exit_code = int(marker.group(2).split()[0])
    return block


def _ci_job(text: str) -> tuple[str, dict[str, str]] | None:
    """A CI job's ``script:`` as one bash script, and its ``variables``."""
    document = yaml.safe_load(text)
    if not isinstance(document, dict):
        return None
    for job in document.values():
        if isinstance(job, dict) and isinstance(job.get("script"), list):
            variables = {str(k): str(v) for k, v in (job.get("variables") or {}).items()}
            return "\n".join(str(step).strip() for step in job["script"]) + "\n", variables
    return None
