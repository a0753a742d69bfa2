"""How tests/client/test_docs_run.py reads a page's command blocks (no platform needed)."""

from __future__ import annotations

from pathlib import Path

from .docs_blocks import FENCE, NOT_YET_RUN, RUN_BY, blocks

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_markers_and_kinds_of_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```sh\necho one\n```\n\n<!-- not-run: needs a remote host -->\n```bash\nssh x\n```\n"
        "<!-- exit: 5 (nothing to retry) -->\n```sh\nmodelport retry x\n```\n"
        "```text\n$ output only\n```\n```json\n{}\n```\n```python\nprint(1)\n```\n"
        "```yaml\njob:\n  variables:\n    A: b\n  script:\n    - echo a\n    - >\n"
        "      echo b\n      c\n```\n```yaml\nnot: a job\n```\n"
        "1. a step\n\n   ```sh\n   echo indented\n     two\n   ```\n")
    found = blocks(page)
    assert [(b.lang, b.line, b.not_run, b.exit_code) for b in found] == [
        ("sh", 1, None, 0), ("sh", 6, "needs a remote host", 0), ("sh", 10, None, 5),
        ("python", 19, None, 0), ("ci", 22, None, 0), ("sh", 37, None, 0)]
    assert found[-2].text == "echo a\necho b c\n" and found[-2].env == {"A": "b"}
    assert found[-1].text == "echo indented\n  two\n"


def test_the_client_pages_blocks_are_few_not_run():
    marked = [b for page in ("client.md", "ci-example.md") for b in blocks(DOCS / page)
              if b.not_run]
    # An MLflow run import, ci-bot's token, and `login --sso` (a person at a browser: run by
    # tests/e2e/test_cli_login_journey.py with Chromium).
    assert len(marked) == 3, [b.where for b in marked]


def test_every_fence_names_its_language():
    untagged = []
    for page in sorted(DOCS.glob("*.md")):
        opening = True
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.lstrip().startswith("```"):
                fence = FENCE.match(line)
                if opening and not (fence and fence.group(2)):
                    untagged.append(f"{page.name}:{number}")
                opening = not opening
    assert not untagged, f"fences without a language (text, sh, python, json…): {untagged}"


def test_every_command_block_in_docs_is_run_or_marked_not_run():
    """A page gaining a shell or Python block must get a test running it (``RUN_BY``) or an
    honest ``<!-- not-run: reason -->``."""
    here = Path(__file__).parent
    for test in RUN_BY.values():
        module, function = test.split("::")
        assert f"def {function}(" in (here / module).read_text(), test
    uncovered = {page.name: [block.where for block in blocks(page) if not block.not_run]
                 for page in sorted(DOCS.glob("*.md")) if page.name not in RUN_BY}
    missing = [where for page, found in uncovered.items() if page not in NOT_YET_RUN
               for where in found]
    assert not missing, f"command blocks no test runs (add to RUN_BY or mark not-run): {missing}"
    assert all(uncovered.get(page) for page in NOT_YET_RUN), "NOT_YET_RUN lists a covered page"
