"""The ASGI app in-process (httpx ASGITransport): models that need no separate process."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serving.app import ModelServer
from serving.config import Settings


def make_app(model_dir) -> ModelServer:
    app = ModelServer(Settings(model_dir=str(model_dir), model_name="m"), load_in_background=False)
    app._load()
    assert app.model is not None, app.load_error
    return app


def call(app: ModelServer, payload: object, path: str = "/invocations") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, json=payload)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def mixed_app(model_dirs) -> ModelServer:
    return make_app(model_dirs["mixed"])


def test_pipeline_with_string_and_int_columns_is_served_from_a_dataframe(mixed_app) -> None:
    records = [{"color": "red", "size": 3, "fragile": True},
               {"color": "blue", "size": 4, "fragile": False}]
    r = call(mixed_app, {"dataframe_records": records})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2
    assert mixed_app.model.input_mode == "frame"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"size": 1.5}, "column 'size': expected long, got double 1.5 in row 0"),
        ({"color": 7}, "column 'color': expected string, got integer 7 in row 0"),
        ({"fragile": "yes"}, "column 'fragile': expected boolean, got string 'yes' in row 0"),
    ],
)
def test_wrong_types_in_int_string_and_bool_columns_are_400(mixed_app, change, message) -> None:
    base = {"color": "red", "size": 3, "fragile": True}
    r = call(mixed_app, {"dataframe_records": [{**base, **change}]})
    assert r.status_code == 400
    assert r.json() == {"error_code": "INVALID_PARAMETER_VALUE", "message": message}


def test_model_without_signature_is_served_best_effort(model_dirs) -> None:
    app = make_app(model_dirs["nosig"])
    assert app.model.signature.kind == "none"
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    assert call(app, {"instances": rows}).json() == {"predictions": [0, 2]}


def test_unknown_route_is_404_in_mlflow_error_shape(model_dirs) -> None:
    app = ModelServer(Settings(model_dir=str(model_dirs["iris"])), load_in_background=False)
    r = call(app, {}, path="/nope")
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_model_that_fails_to_load_reports_it_on_ready(tmp_path) -> None:
    app = ModelServer(Settings(model_dir=str(tmp_path)), load_in_background=False)
    app._load()

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/ready")

    r = asyncio.run(go())
    assert r.status_code == 503
    assert "model failed to load" in r.json()["message"] and "MLmodel" in r.json()["message"]


# --- a missing value in a required column: a 400 naming it, never the model's 500 -----------
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]  # conftest.IRIS_COLUMNS


@pytest.fixture(scope="module")
def iris_app(model_dirs) -> ModelServer:
    return make_app(model_dirs["iris"])


def post_raw(app: ModelServer, body: bytes, content_type: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/invocations", content=body,
                                     headers={"content-type": content_type})

    return asyncio.run(go())


def bodies(bad: str) -> dict[str, tuple[bytes, str]]:
    """Row 1's petal length is ``bad`` (JSON text: null, NaN, Infinity) in every format."""
    good, row = "[5.1, 3.5, 1.4, 0.2]", f"[6.7, 3.0, {bad}, 2.3]"
    cols = ", ".join(f'"{c}"' for c in IRIS)

    def records(values: str) -> str:
        return "{" + ", ".join(f'"{c}": {v}' for c, v in
                               zip(IRIS, values.strip("[]").split(", "), strict=True)) + "}"

    columnar = "{" + ", ".join(
        f'"{c}": [{g}, {r}]' for c, g, r in zip(IRIS, good.strip("[]").split(", "),
                                               row.strip("[]").split(", "), strict=True)) + "}"
    csv_cell = {"null": "", "NaN": "NaN", "Infinity": "inf"}.get(bad, bad)
    return {
        "dataframe_split": (f'{{"dataframe_split": {{"columns": [{cols}], '
                            f'"data": [{good}, {row}]}}}}'.encode(), "application/json"),
        "dataframe_records": (f'{{"dataframe_records": [{records(good)}, {records(row)}]}}'
                              .encode(), "application/json"),
        "instances (records)": (f'{{"instances": [{records(good)}, {records(row)}]}}'.encode(),
                                "application/json"),
        "instances (rows)": (f'{{"instances": [{good}, {row}]}}'.encode(), "application/json"),
        "inputs": (f'{{"inputs": {columnar}}}'.encode(), "application/json"),
        "csv": ((",".join(IRIS) + "\n5.1,3.5,1.4,0.2\n" + f"6.7,3.0,{csv_cell},2.3\n").encode(),
                "text/csv"),
    }


@pytest.mark.parametrize(("bad", "what"), [
    ("null", "null"), ("NaN", "NaN"), ("Infinity", "inf")])
@pytest.mark.parametrize("shape", ["dataframe_split", "dataframe_records", "instances (records)",
                                   "instances (rows)", "inputs", "csv"])
def test_a_missing_or_infinite_value_in_a_required_double_column_is_a_400_naming_it(
        iris_app, bad, what, shape) -> None:
    """The finding: null or NaN in a required double column reached the model, whose ValueError
    came back as a 500."""
    body, content_type = bodies(bad)[shape]
    r = post_raw(iris_app, body, content_type)
    assert r.status_code == 400, r.text
    column = "petal_length"
    if what == "inf":
        expected = f"column '{column}': expected a finite double, got inf in row 1"
    else:
        shown = "an empty CSV cell" if shape == "csv" and what == "null" else what
        expected = f"column '{column}': expected double, got {shown} in row 1 " \
                   "(the column is required)"
    assert r.json() == {"error_code": "INVALID_PARAMETER_VALUE", "message": expected}


@pytest.mark.parametrize("column", ["color", "size", "fragile"])
def test_null_in_a_required_string_long_or_boolean_column_is_a_400(mixed_app, column) -> None:
    record = {"color": "red", "size": 3, "fragile": True} | {column: None}
    r = call(mixed_app, {"dataframe_records": [record]})
    assert r.status_code == 400
    assert r.json()["message"].startswith(f"column '{column}': expected ")
    assert r.json()["message"].endswith("got null in row 0 (the column is required)")


def test_valid_requests_still_predict_in_every_shape(iris_app) -> None:
    for shape, (body, content_type) in bodies("5.0").items():
        if shape == "csv":
            body = body.replace(b"6.7,3.0,,2.3", b"6.7,3.0,5.0,2.3")
        r = post_raw(iris_app, body, content_type)
        assert r.status_code == 200, (shape, r.text)
        assert len(r.json()["predictions"]) == 2


def test_a_body_read_leniently_is_logged_parsed_so_the_log_batch_stays_json(model_dirs) -> None:
    """orjson refuses NaN literals; such a body, read by the standard library, must not be
    spliced verbatim into a log batch the ingest endpoint parses with orjson."""
    import orjson

    from serving.shipping import Shipper

    app = ModelServer(Settings(model_dir=str(model_dirs["iris"]), model_name="m",
                               ingest_url="http://127.0.0.1:9/unused"), load_in_background=False)
    app._load()
    body, content_type = bodies("NaN")["dataframe_split"]
    assert post_raw(app, body, content_type).status_code == 400
    logged = app.buffer.records[-1]
    assert type(logged[5]) is not bytes
    doc = orjson.loads(Shipper(app.buffer, "http://unused").encode([logged]))
    assert doc["records"][0]["inputs"]["data"][1][2] is None  # NaN logged as null
