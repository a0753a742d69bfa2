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
