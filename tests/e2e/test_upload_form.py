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


def test_choosing_an_mlflow_zip_fills_the_example_from_its_signature(
        engineer_on_model_page, page, tmp_path):
    """Only the archive's MLmodel is read, in the browser; MLflow folds the signature's JSON
    over several YAML lines, as here."""
    import zipfile

    import yaml

    from registry.models import RegisteredModel

    inputs = [{"type": "double", "name": name, "required": True} for name in COLUMNS] + [
        {"type": "string", "name": "it's a label", "required": True},
        {"type": "long", "name": "count", "required": False}]
    mlmodel = yaml.safe_dump({"flavors": {"python_function": {"loader_module": "mlflow.sklearn"}},
                              "signature": {"inputs": json.dumps(inputs), "outputs": None}},
                             default_flow_style=False)
    assert "\n    " in mlmodel.split("inputs:")[1]  # folded, as MLflow writes it
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("model/MLmodel", mlmodel)
        bundle.writestr("model/model.pkl", b"x" * 4096)

    form = engineer_on_model_page
    form.get_by_label("Model file").set_input_files(str(archive))
    page.get_by_text("Filled from the model's signature").wait_for()
    example = json.loads(form.get_by_label("Input example").input_value())
    assert example == {"columns": [*COLUMNS, "it's a label", "count"],
                       "data": [[0.5, 0.5, 0.5, 0.5, "text", 1]]}
    form.get_by_label("Model file").set_input_files(str(tmp_path / "model.zip"))  # same again
    assert json.loads(form.get_by_label("Input example").input_value()) == example
    # Sent unchanged, the made-up row is left out (the platform builds the same row itself,
    # neither predicted in the sandbox nor a drift baseline): the request is caught and dropped.
    sent: list[bytes] = []

    def catch(route):
        sent.append(route.request.post_data_buffer or b"")
        route.abort()

    page.route("**/models/iris/", catch)
    page.get_by_role("button", name="Upload and validate").click()
    page.wait_for_function("document.querySelector('#upload-form button[type=submit]')"
                           ".disabled === false")
    assert len(sent) == 1
    assert b'name="input_example"\r\n\r\n\r\n' in sent[0]
    assert b'filename="model.zip"' in sent[0]
    assert not RegisteredModel.objects.get(name="iris").versions.exists()
