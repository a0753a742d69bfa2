"""The model server as a real subprocess on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import re
import signal
import time

import httpx
import pytest

# Same values as conftest.py (test modules do not import conftest: no package __init__ here,
# so that this folder never shadows the top-level ``serving`` package).
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
INGEST_TOKEN = "test-ingest-token"

pytestmark = pytest.mark.timeout(120)

ROW = [5.1, 3.5, 1.4, 0.2]
ROWS = [ROW, [6.7, 3.0, 5.2, 2.3]]


def post(server, payload: object, path: str = "/invocations", **kw) -> httpx.Response:
    return httpx.post(server.url + path, json=payload, timeout=10.0, **kw)


def metric(server, name: str, labels: str = "") -> float:
    text = httpx.get(server.url + "/metrics", timeout=5.0).text
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + "$", text, re.M)
    return float(match.group(1)) if match else 0.0


# --- readiness (first: the slow model is still loading) --------------------------------------


def test_ready_is_503_while_loading_then_200_and_health_always_200(servers) -> None:
    slow = servers["slow"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(slow.url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    ready = httpx.get(slow.url + "/ready", timeout=2)
    assert ready.status_code == 503
    assert ready.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert httpx.get(slow.url + "/ping", timeout=2).status_code == 503
    assert httpx.get(slow.url + "/v2/health/ready", timeout=2).status_code == 503
    early = post(slow, {"dataframe_split": {"columns": ["x"], "data": [[1.0]]}})
    assert early.status_code == 503
    slow.wait_ready()
    assert httpx.get(slow.url + "/ping").status_code == 200
    assert httpx.get(slow.url + "/v2/health/ready").status_code == 200
    assert httpx.get(slow.url + "/health").json() == {"status": "alive"}


# --- every input format ----------------------------------------------------------------------


def test_dataframe_split_returns_mlflow_shaped_predictions(iris_server) -> None:
    r = post(iris_server, {"dataframe_split": {"columns": IRIS_COLUMNS, "data": ROWS}})
    assert r.status_code == 200
    assert r.json() == {"predictions": [0, 2]}
    assert r.headers["content-type"] == "application/json"


def test_dataframe_split_accepts_columns_in_any_order(iris_server) -> None:
    cols = list(reversed(IRIS_COLUMNS))
    rows = [list(reversed(r)) for r in ROWS]
    r = post(iris_server, {"dataframe_split": {"columns": cols, "data": rows}})
    assert r.json() == {"predictions": [0, 2]}


def test_dataframe_records(iris_server) -> None:
    records = [dict(zip(IRIS_COLUMNS, row, strict=True)) for row in ROWS]
    assert post(iris_server, {"dataframe_records": records}).json() == {"predictions": [0, 2]}


def test_instances_as_rows_and_as_records(iris_server) -> None:
    assert post(iris_server, {"instances": ROWS}).json() == {"predictions": [0, 2]}
    records = [dict(zip(IRIS_COLUMNS, row, strict=True)) for row in ROWS]
    assert post(iris_server, {"instances": records}).json() == {"predictions": [0, 2]}


def test_inputs_as_columns(iris_server) -> None:
    columns = {c: [r[i] for r in ROWS] for i, c in enumerate(IRIS_COLUMNS)}
    assert post(iris_server, {"inputs": columns}).json() == {"predictions": [0, 2]}


def test_text_csv_with_and_without_pandas_index(iris_server) -> None:
    body = ",".join(IRIS_COLUMNS) + "\n" + "\n".join(",".join(map(str, r)) for r in ROWS) + "\n"
    r = httpx.post(iris_server.url + "/invocations", content=body,
                   headers={"Content-Type": "text/csv"})
    assert r.json() == {"predictions": [0, 2]}
    indexed = "," + ",".join(IRIS_COLUMNS) + "\n" + "\n".join(
        f"{i}," + ",".join(map(str, r)) for i, r in enumerate(ROWS)
    )
    r = httpx.post(iris_server.url + "/invocations", content=indexed,
                   headers={"Content-Type": "text/csv; charset=utf-8"})
    assert r.json() == {"predictions": [0, 2]}


def test_v2_infer_with_one_tensor_and_with_named_columns(iris_server) -> None:
    flat = [*ROWS[0], *ROWS[1]]
    one = {"id": "abc", "inputs": [
        {"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": flat}
    ]}
    r = post(iris_server, one, path="/v2/models/iris/infer")
    assert r.status_code == 200
    doc = r.json()
    assert doc["id"] == "abc"
    assert doc["model_name"] == "iris" and doc["model_version"] == "7"
    expected = {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 2]}
    assert doc["outputs"] == [expected]
    named = {"inputs": [
        {"name": c, "shape": [2], "datatype": "FP64", "data": [r[i] for r in ROWS]}
        for i, c in enumerate(IRIS_COLUMNS)
    ]}
    r = post(iris_server, named, path="/v2/models/iris/infer")
    assert r.json()["outputs"][0]["data"] == [0, 2]


def test_v2_infer_for_another_model_name_is_404(iris_server) -> None:
    r = post(iris_server, {"inputs": [{"name": "x", "shape": [1, 4], "data": ROW}]},
             path="/v2/models/other/infer")
    assert r.status_code == 404


def test_v2_model_metadata_lists_signature_columns(iris_server) -> None:
    doc = httpx.get(iris_server.url + "/v2/models/iris").json()
    assert [i["name"] for i in doc["inputs"]] == IRIS_COLUMNS
    assert doc["platform"] == "mlflow_sklearn"


def test_tensor_signature_model_takes_instances_and_inputs(regressor_server) -> None:
    row = [0.01] * 10
    a = post(regressor_server, {"instances": [row, row]})
    b = post(regressor_server, {"inputs": [row]})
    assert a.status_code == b.status_code == 200
    assert len(a.json()["predictions"]) == 2
    assert a.json()["predictions"][0] == pytest.approx(b.json()["predictions"][0])


def test_pyfunc_flavor_model_is_served_through_mlflow(servers) -> None:
    slow = servers["slow"]
    slow.wait_ready()
    r = post(slow, {"dataframe_split": {"columns": ["x"], "data": [[1.5], [2.0]]}})
    assert r.json() == {"predictions": [3.0, 4.0]}


# --- bad input → 400 / 413 with a message naming the problem -------------------------------


def assert_error(r: httpx.Response, status: int, code: str, *fragments: str) -> None:
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["error_code"] == code
    for fragment in fragments:
        assert fragment in doc["message"], doc["message"]


def test_missing_column_is_400_naming_the_column(iris_server) -> None:
    r = post(iris_server, {"dataframe_split": {"columns": IRIS_COLUMNS[:3],
                                               "data": [ROW[:3]]}})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE", "missing required column 'petal_width'")


def test_string_in_double_column_is_400_naming_column_value_and_row(iris_server) -> None:
    rows = [ROW, ROW, ROW, [5.0, 3.0, "abc", 1.0]]
    r = post(iris_server, {"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE",
                 "column 'petal_length': expected double, got string 'abc' in row 3")


def test_boolean_in_double_column_is_400(iris_server) -> None:
    r = post(iris_server, {"dataframe_split": {"columns": IRIS_COLUMNS,
                                               "data": [[5.0, 3.0, True, 1.0]]}})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE",
                 "column 'petal_length': expected double, got boolean true in row 0")


def test_wrong_row_length_is_400(iris_server) -> None:
    r = post(iris_server, {"dataframe_split": {"columns": IRIS_COLUMNS, "data": [ROW, ROW[:3]]}})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE", "row 1: expected 4 values", "got 3")


def test_wrong_tensor_shape_is_400(regressor_server) -> None:
    r = post(regressor_server, {"instances": [[0.1] * 9]})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE", "expected shape [-1, 10], got [1, 9]")


def test_string_in_tensor_is_400(regressor_server) -> None:
    r = post(regressor_server, {"instances": [[0.1] * 9 + ["x"]]})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE", "expected float32, got string 'x'")


def test_empty_batch_is_400(iris_server) -> None:
    for payload in ({"dataframe_split": {"columns": IRIS_COLUMNS, "data": []}},
                    {"dataframe_records": []}, {"instances": []}):
        assert_error(post(iris_server, payload), 400, "INVALID_PARAMETER_VALUE", "empty batch")


def test_malformed_json_is_400(iris_server) -> None:
    r = httpx.post(iris_server.url + "/invocations", content=b'{"instances": [[1,2',
                   headers={"Content-Type": "application/json"})
    assert_error(r, 400, "MALFORMED_REQUEST", "not valid JSON")


def test_unknown_payload_shape_is_400_listing_accepted_fields(iris_server) -> None:
    assert_error(post(iris_server, {"data": ROWS}), 400, "MALFORMED_REQUEST",
                 "dataframe_split", "received fields ['data']")


def test_body_over_the_size_limit_is_413(iris_server) -> None:
    rows = [ROW] * 5000  # ~100 kB > MODELPORT_MAX_BODY_BYTES=65536
    r = post(iris_server, {"instances": rows})
    assert_error(r, 413, "REQUEST_LIMIT_EXCEEDED", "exceeds the limit of 65536 bytes")


def test_unsupported_content_type_is_415(iris_server) -> None:
    r = httpx.post(iris_server.url + "/invocations", content=b"x",
                   headers={"Content-Type": "application/xml"})
    assert r.status_code == 415


# --- prediction errors ------------------------------------------------------------------------


def test_null_in_a_required_column_is_a_400_naming_it_not_the_models_500(iris_server) -> None:
    """It was: null → NaN, which LogisticRegression refused inside predict() (a 500). A model's
    own failure is still a 500 (test_pyfunc_prediction_error_is_500)."""
    before = metric(iris_server, "modelport_request_errors_total",
                    'endpoint="invocations",kind="client"')
    r = post(iris_server, {"dataframe_split": {"columns": IRIS_COLUMNS,
                                               "data": [[5.0, None, 1.0, 0.2]]}})
    assert_error(r, 400, "INVALID_PARAMETER_VALUE",
                 f"column '{IRIS_COLUMNS[1]}': expected double, got null in row 0 "
                 "(the column is required)")
    after = metric(iris_server, "modelport_request_errors_total",
                   'endpoint="invocations",kind="client"')
    assert after == before + 1
    assert post(iris_server, {"instances": ROWS}).status_code == 200


def test_pyfunc_prediction_error_is_500(servers) -> None:
    slow = servers["slow"]
    slow.wait_ready()
    r = post(slow, {"dataframe_split": {"columns": ["x"], "data": [[-1.0]]}})
    assert_error(r, 500, "INTERNAL_ERROR", "x must be non-negative")
    assert httpx.get(slow.url + "/health").status_code == 200


# --- request id, version, metrics ------------------------------------------------------------


def test_request_id_is_echoed_or_generated(iris_server) -> None:
    r = post(iris_server, {"instances": [ROW]}, headers={"X-Request-ID": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    generated = post(iris_server, {"instances": [ROW]}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)


def test_version_reports_model_and_signature(iris_server) -> None:
    doc = httpx.get(iris_server.url + "/version").json()
    assert doc["model_name"] == "iris" and doc["model_version"] == "7"
    assert doc["flavor"] == "sklearn" and doc["input_mode"] == "ndarray"
    assert [c["name"] for c in doc["signature"]] == IRIS_COLUMNS


def test_metrics_count_requests_errors_latency_and_load_time(iris_server) -> None:
    ok = 'endpoint="invocations",status="200"'
    bad = 'endpoint="invocations",kind="client"'
    before_ok = metric(iris_server, "modelport_requests_total", ok)
    before_bad = metric(iris_server, "modelport_request_errors_total", bad)
    before_hist = metric(iris_server, "modelport_request_duration_seconds_count",
                         'endpoint="invocations"')
    post(iris_server, {"instances": [ROW]})
    post(iris_server, {"instances": []})
    assert metric(iris_server, "modelport_requests_total", ok) == before_ok + 1
    assert metric(iris_server, "modelport_request_errors_total", bad) == before_bad + 1
    assert metric(iris_server, "modelport_request_duration_seconds_count",
                  'endpoint="invocations"') == before_hist + 2
    assert metric(iris_server, "modelport_model_load_seconds") > 0
    assert "modelport_requests_in_flight" in httpx.get(iris_server.url + "/metrics").text


# --- MLflow's own client ---------------------------------------------------------------------


def test_mlflow_scoring_server_client_works_unchanged(iris_server) -> None:
    import pandas as pd
    from mlflow.deployments import PredictionsResponse
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    client = ScoringServerClient("127.0.0.1", iris_server.port)
    client.wait_server_ready(timeout=10)
    client.ping()
    assert "modelport" in client.get_version()
    response = client.invoke(pd.DataFrame(ROWS, columns=IRIS_COLUMNS))
    assert isinstance(response, PredictionsResponse)
    assert response.get_predictions(predictions_format="ndarray").tolist() == [0, 2]
    assert list(response.get_predictions()[0]) == [0, 2]


# --- prediction log shipping -----------------------------------------------------------------


def test_prediction_logs_are_shipped_in_batches_with_token(iris_server, receiver) -> None:
    post(iris_server, {"instances": [ROW]}, headers={"X-Request-ID": "ship-me-1"})
    post(iris_server, {"instances": [ROW]}, headers={"X-Request-ID": "ship-me-2"})
    assert receiver.wait_for(
        lambda recs: {"ship-me-1", "ship-me-2"} <= {r["request_id"] for r in recs}
    )
    batch = next(b for b in receiver.batches
                 if any(r["request_id"] == "ship-me-1" for r in b["records"]))
    assert batch["deployment"] == "dep-1" and batch["revision"] == "3"
    assert batch["replica"] == "iris-0"
    record = next(r for r in batch["records"] if r["request_id"] == "ship-me-1")
    assert record["status"] == 200 and record["outputs"] == [0]
    # A JSON request body is logged as sent (verbatim, never re-encoded).
    assert record["inputs"] == {"instances": [ROW]} and record["latency_ms"] > 0
    assert record["timestamp"].endswith("+00:00")
    assert f"Bearer {INGEST_TOKEN}" in receiver.auth_headers


def test_full_log_buffer_drops_and_counts_while_ingest_is_down(regressor_server) -> None:
    for _ in range(12):  # buffer holds 5; the ingest URL refuses connections
        assert post(regressor_server, {"instances": [[0.01] * 10]}).status_code == 200
    # 12 records, room for 5 in the buffer plus the one batch (≤ 5) the shipper holds for its
    # retry: at least 2 dropped — 7 when all 12 arrive before the shipper's first tick (0.2 s),
    # fewer on a busy machine where a tick moves some into the retry batch first.
    assert metric(regressor_server, "modelport_prediction_logs_dropped_total") >= 2
    deadline = time.monotonic() + 5
    while metric(regressor_server, "modelport_prediction_log_ship_failures_total") < 1:
        assert time.monotonic() < deadline, "no shipping failure recorded"
        time.sleep(0.1)
    assert httpx.get(regressor_server.url + "/health").status_code == 200


def test_sigterm_flushes_buffered_logs_and_exits_cleanly(servers, receiver) -> None:
    slow = servers["slow"]
    slow.wait_ready()
    r = post(slow, {"dataframe_split": {"columns": ["x"], "data": [[3.0]]}},
             headers={"X-Request-ID": "flush-on-exit"})
    assert r.status_code == 200
    # Ship interval is 60 s, so only the shutdown flush can deliver this record.
    assert not receiver.wait_for(
        lambda recs: any(x["request_id"] == "flush-on-exit" for x in recs), timeout=0.3
    )
    slow.proc.send_signal(signal.SIGTERM)
    assert slow.proc.wait(timeout=10) == 0
    assert any(x["request_id"] == "flush-on-exit" for x in receiver.records())
