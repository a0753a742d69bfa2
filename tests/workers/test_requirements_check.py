"""A model's requirements may only name packages: every other pip form is refused by line."""

from __future__ import annotations

import pytest

from workers.runtimes.requirements import RequirementRefused, check_requirements

REFUSED = [
    ("victim @ http://127.0.0.1:9/victim.tar.gz", "direct URL references"),
    ("victim@https://example.org/victim-1.0-py3-none-any.whl", "direct URL references"),
    ("https://example.org/victim-1.0.tar.gz", "direct URLs"),
    ("git+https://example.org/victim.git#egg=victim", "VCS links"),
    ("victim @ git+ssh://git@example.org/victim.git", "VCS links"),
    ("hg+http://example.org/victim", "VCS links"),
    ("file:///tmp/victim", "local files"),
    ("victim @ file:///tmp/victim", "local files"),
    ("./victim", "local paths"),
    ("/srv/victim", "local paths"),
    ("../victim-1.0.tar.gz", "local paths"),
    ("victim-1.0-py3-none-any.whl", "local paths and archives"),
    ("-e git+https://example.org/victim.git#egg=victim", "editable installs"),
    ("--editable ./victim", "editable installs"),
    ("-r other.txt", "other requirement or constraint files"),
    ("--requirement=other.txt", "other requirement or constraint files"),
    ("-c constraints.txt", "other requirement or constraint files"),
    ("-i http://127.0.0.1:9/simple", "package indexes"),
    ("--index-url http://127.0.0.1:9/simple", "package indexes"),
    ("--extra-index-url=http://127.0.0.1:9/simple", "package indexes"),
    ("--find-links http://127.0.0.1:9/", "package indexes"),
    ("-f /tmp/wheels", "package indexes"),
    ("--trusted-host 127.0.0.1", "package indexes"),
    ("--no-index", "package indexes"),
    ("--pre", "pip options (--pre)"),
    ("--no-binary :all:", "pip options (--no-binary)"),
    ("--only-binary=:none:", "pip options (--only-binary"),
    ("victim==1.0 --hash=sha256:00", "per-requirement pip options"),
    ("victim --config-settings=x=y", "per-requirement pip options"),
    ("victim===", "not a requirement of the form"),
    ("${VICTIM_URL}", "not a requirement of the form"),
]


@pytest.mark.parametrize(("line", "reason"), REFUSED)
def test_each_refused_form_names_its_line_number_text_and_reason(line: str, reason: str) -> None:
    with pytest.raises(RequirementRefused) as caught:
        check_requirements(["scikit-learn==1.9.1", "# pinned by the training job", line])
    message = str(caught.value)
    assert f"requirements.txt line 3 {line!r}" in message
    assert reason in message


def test_plain_requirements_pass_with_extras_specifiers_and_markers() -> None:
    lines = ["# comment", "", "scikit-learn==1.9.1", "numpy>=1.26,<3  # inline comment",
             "uvicorn[standard]>=0.34", "pywin32==306; sys_platform == 'win32'",
             "tomli>=1 ; python_version < \"3.11\"", "Pandas ~= 2.2", "mlflow"]
    assert check_requirements(lines) == [
        "scikit-learn==1.9.1", "numpy>=1.26,<3", "uvicorn[standard]>=0.34",
        "pywin32==306; sys_platform == 'win32'", "tomli>=1 ; python_version < \"3.11\"",
        "Pandas ~= 2.2", "mlflow"]


def test_every_refused_line_is_reported_and_continuations_keep_their_first_line_number() -> None:
    with pytest.raises(RequirementRefused) as caught:
        check_requirements(["numpy==2.4.6", "victim \\", "  @ http://127.0.0.1:9/v.tar.gz",
                            "--index-url http://127.0.0.1:9/simple"], source="reqs.txt")
    assert caught.value.problems[0].startswith("reqs.txt line 2 'victim   @ http://127.0.0.1")
    assert caught.value.problems[1].startswith("reqs.txt line 4 '--index-url")
    assert len(caught.value.problems) == 2


def test_the_image_builder_refuses_the_same_lines_before_any_docker_call() -> None:
    from workers.runtimes.images import ImageBuilder, ImageBuildError

    builder = ImageBuilder(None, "modelport/base:bookworm", ca_bundle=None, offline=True)
    with pytest.raises(ImageBuildError, match=r"line 2 'victim @ http://127.0.0.1:9/v.tar.gz'"):
        builder.ensure_image(["numpy==2.4.6", "victim @ http://127.0.0.1:9/v.tar.gz"])
