"""Serving image tags: one per normalized requirement set, built once and then reused."""

from __future__ import annotations

from typing import Any

import pytest

from workers.runtimes.images import normalize_requirements, requirements_digest


def test_normalization_ignores_order_comments_case_and_options() -> None:
    a = ["scikit-learn==1.9.1", "numpy==2.4.6", "# comment", "", "-r other.txt",
         "--extra-index-url https://example.invalid/simple"]
    b = ["NumPy == 2.4.6  # pinned", "scikit_learn==1.9.1", "numpy==2.4.6"]
    assert normalize_requirements(a) == normalize_requirements(b) == [
        "numpy==2.4.6", "scikit-learn==1.9.1"]
    assert requirements_digest(a) == requirements_digest(b)


def test_mlflow_becomes_skinny_and_extras_markers_survive() -> None:
    out = normalize_requirements(["mlflow==3.17.2", "uvicorn[Standard]>=0.34,<0.55",
                                  "pywin32==306; sys_platform == 'win32'"])
    assert "mlflow-skinny==3.17.2" in out
    assert "uvicorn[standard]<0.55,>=0.34" in out
    assert any(line.startswith("pywin32==306; sys_platform") for line in out)
    assert normalize_requirements(["mlflow==3.17.2"], mlflow_skinny=False) == ["mlflow==3.17.2"]


def test_tag_differs_per_requirement_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.runtimes.images import ImageBuilder

    monkeypatch.delenv("MODELPORT_SERVING_REPOSITORY", raising=False)

    builder = ImageBuilder(None, "modelport/base:bookworm", ca_bundle=None, offline=True)
    t1 = builder.tag_for(["scikit-learn==1.9.1"])
    t2 = builder.tag_for(["scikit-learn==1.9.0"])
    assert t1 != t2
    assert t1.startswith("modelport/serving:")
    requirements, code = t1.split(":")[1].split("-")
    assert len(requirements) == 12 and len(code) == 12
    assert t2.endswith(f"-{code}")  # same serving code, same base image


def test_tag_differs_per_serving_code_and_base_image(tmp_path: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two installations sharing a Docker Engine with different platform code build different
    tags: neither retags (and runs) the other's image."""
    import shutil

    from workers.runtimes.images import REPO_ROOT, ImageBuilder

    monkeypatch.delenv("MODELPORT_SERVING_REPOSITORY", raising=False)
    other = tmp_path / "other-checkout"
    for rel in ("serving", "platform/images"):
        shutil.copytree(REPO_ROOT / rel, other / rel)
    for rel in ("platform/serving.Dockerfile", "platform/serving-requirements.txt"):
        shutil.copy(REPO_ROOT / rel, other / rel)
    reqs = ["scikit-learn==1.9.1"]
    ours = ImageBuilder(None, "modelport/base:bookworm", ca_bundle=None, offline=True)
    same = ImageBuilder(None, "modelport/base:bookworm", ca_bundle=None, offline=True,
                        source_dir=other)
    assert same.tag_for(reqs) == ours.tag_for(reqs)  # a copy of the same code
    (other / "serving" / "app.py").write_text((other / "serving" / "app.py").read_text()
                                              + "\n# changed\n")
    assert same.tag_for(reqs) != ours.tag_for(reqs)
    rebased = ImageBuilder(None, "example/base:trixie", ca_bundle=None, offline=True)
    assert rebased.tag_for(reqs) != ours.tag_for(reqs)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_second_ensure_image_reuses_the_tag(image_builder: Any, serving_image: str,
                                           iris_requirements: list[str],
                                           docker_client: Any) -> None:
    # Same set, other order and spelling: a new model version with the same requirements.
    again = [r.upper() for r in reversed(iris_requirements)] + ["# from a newer version"]
    lines: list[str] = []
    tag = image_builder.ensure_image(again, lines.append)
    assert tag == serving_image
    assert any("cached" in line for line in lines), lines
    assert not any(line.startswith("Step ") for line in lines), "must not rebuild"
    report = image_builder.ensure_image_report(again)
    assert report.tag == serving_image and report.reused is True
    assert report.size_bytes == docker_client.images.get(serving_image).attrs["Size"] > 0


def test_plain_package_dropped_when_its_cpu_variant_is_there() -> None:
    # What stock mlflow writes for an XGBoost model when xgboost-cpu is installed.
    mlflow_wrote = ["mlflow==3.17.2", "xgboost-cpu==3.2.0", "xgboost==3.2.0", "numpy==2.4.6"]
    assert normalize_requirements(mlflow_wrote) == [
        "mlflow-skinny==3.17.2", "numpy==2.4.6", "xgboost-cpu==3.2.0"]
    assert requirements_digest(mlflow_wrote) == requirements_digest(
        ["mlflow==3.17.2", "xgboost-cpu==3.2.0", "numpy==2.4.6"])
    # Alone, the plain package stays (a GPU image is the model owner's choice).
    assert normalize_requirements(["XGBoost==3.2.0"]) == ["xgboost==3.2.0"]
