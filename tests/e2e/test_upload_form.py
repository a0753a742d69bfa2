"""Register a version in a real browser without picking a format: a .joblib file is told from
its name. A refused upload shows its errors on top of the form and by the field, and the
chosen file stays selected, so fixing the form and sending it again needs no second pick.

Validation runs for real (Celery eager in the live server's thread, the sandbox on Docker)."""

from __future__ import annotations

import io
import json

import joblib
import pytest

from registry.models import ModelVersion
from teams.roles import Role
from tests.factories import PASSWORD, MembershipFactory, TeamFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
EXAMPLE = {"columns": COLUMNS, "data": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def iris_joblib(tmp_path):
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    model = LogisticRegression(max_iter=300).fit(pd.DataFrame(data.data, columns=COLUMNS),
                                                 data.target)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    path = tmp_path / "iris.joblib"
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def engineer_on_model_page(live_server, page):
    from registry import services

    team = TeamFactory(slug="ml-search")
    eve = UserFactory(username="eve")
    MembershipFactory(team=team, user=eve, role=Role.ENGINEER)
    services.create_model(actor=eve, team=team, name="iris")
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill("eve")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Dashboard").wait_for()
    page.goto(f"{live_server.url}/models/iris/")
    return page.locator("form", has=page.get_by_role("button", name="Upload and validate"))


@pytest.mark.parametrize("width,height", [(1440, 900), (390, 844)])
def test_joblib_upload_with_no_format_after_an_error_keeps_the_file(
        engineer_on_model_page, page, iris_joblib, platform_serving_image, screenshot,
        width, height):
    from playwright.sync_api import expect

    page.set_viewport_size({"width": width, "height": height})
    form = engineer_on_model_page
    expect(form.get_by_label("Format")).to_have_value("")  # "Detect from the file"
    form.get_by_label("Model file").set_input_files(str(iris_joblib))
    form.get_by_label("Description").fill("first try")
    page.get_by_role("button", name="Upload and validate").click()  # no input example: refused

    summary = page.locator("#upload-form .form-errors")
    expect(summary).to_contain_text("needs an input_example")
    expect(page.locator("#id_input_example-error")).to_contain_text("needs an input_example")
    assert page.locator("#id_file").evaluate("el => el.files.length && el.files[0].name") \
        == "iris.joblib"  # still selected after the error
    expect(page.get_by_label("Description")).to_have_value("first try")
    assert not ModelVersion.objects.exists()
    screenshot(f"upload-error-{width}")

    page.get_by_label("Input example").fill(json.dumps(EXAMPLE))
    page.get_by_role("button", name="Upload and validate").click()  # the same file, not re-picked
    page.get_by_text("Version 1 uploaded; validating.").wait_for(timeout=120_000)
    assert page.url.endswith("/models/iris/versions/1/")
    version = ModelVersion.objects.get()
    assert (version.source_format, version.source) == ("sklearn", "iris.joblib")
    expect(page.locator("#version-status .badge").first).to_have_text("ready", timeout=120_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    screenshot(f"upload-version-{width}")
