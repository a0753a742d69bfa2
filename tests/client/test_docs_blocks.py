"""How tests/client/test_docs_run.py reads a page's command blocks (no platform needed)."""

from __future__ import annotations

from pathlib import Path

from .docs_blocks import blocks

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_markers_and_kinds_of_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\necho one\n```\n\n<!-- not-run: needs a remote host -->\n```bash\nssh x\n```\n"
        "<!-- exit: 5 (nothing to retry) -->\n```sh\nmodelport retry x\n```\n"
        "```text\n$ output only\n```\n```json\n{}\n```\n```python\nprint(1)\n```\n"
        "```yaml\njob:\n  variables:\n    A: b\n  script:\n    - echo a\n    - >\n"
        "      echo b\n      c\n```\n```yaml\nnot: a job\n```\n")
    found = blocks(page)
    assert [(b.lang, b.line, b.not_run, b.exit_code) for b in found] == [
        ("sh", 1, None, 0), ("sh", 6, "needs a remote host", 0), ("sh", 10, None, 5),
        ("python", 19, None, 0), ("ci", 22, None, 0)]
    assert found[-1].text == "echo a\necho b c\n" and found[-1].env == {"A": "b"}


def test_the_client_pages_blocks_are_few_not_run():
    marked = [b for page in ("client.md", "ci-example.md") for b in blocks(DOCS / page)
              if b.not_run]
    assert len(marked) == 2, [b.where for b in marked]
