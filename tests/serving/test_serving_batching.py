"""Opportunistic batching: concurrent requests share one predict call, errors stay per request."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from serving.app import ModelServer
from serving.batching import Batcher, run_items
from serving.config import Settings
from serving.schema import Batch

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def matrix_batch(rows: list[list[float]]) -> Batch:
    return Batch(n_rows=len(rows), matrix=np.array(rows, dtype=np.float64))


def row_sums(batch: Batch, params: object) -> np.ndarray:
    m = batch.as_matrix()
    if np.isnan(m).any():
        raise ValueError("Input contains NaN")
    return m.sum(axis=1)


def test_run_items_stacks_batches_and_splits_output_by_rows() -> None:
    calls: list[int] = []

    def predict(batch: Batch, params: object) -> np.ndarray:
        calls.append(batch.n_rows)
        return row_sums(batch, params)

    out = run_items(predict, [matrix_batch([[1, 2]]), matrix_batch([[3, 4], [5, 6]])])
    assert calls == [3]
    assert [(ok, v.tolist()) for ok, v in out] == [(True, [3.0]), (True, [7.0, 11.0])]


def test_run_items_falls_back_to_one_call_each_and_blames_only_the_bad_request() -> None:
    out = run_items(row_sums, [matrix_batch([[1, 2]]), matrix_batch([[np.nan, 1]]),
                               matrix_batch([[2, 2]])])
    assert out[0][0] and out[0][1].tolist() == [3.0]
    assert not out[1][0] and "NaN" in str(out[1][1])
    assert out[2][0] and out[2][1].tolist() == [4.0]


def test_batcher_groups_requests_submitted_in_the_same_loop_turn() -> None:
    async def scenario() -> tuple[list, Batcher]:
        batcher = Batcher(row_sums, max_rows=3)
        results = await asyncio.gather(
            *(batcher.submit(matrix_batch([[i, i]])) for i in range(5))
        )
        return results, batcher

    results, batcher = asyncio.run(scenario())
    assert [r.tolist() for r in results] == [[0.0], [2.0], [4.0], [6.0], [8.0]]
    assert batcher.batched_requests == 5 and batcher.calls == 2  # max_rows=3 → 3 + 2


@pytest.mark.parametrize("in_thread", [False, True])
def test_concurrent_requests_get_their_own_predictions(model_dirs, monkeypatch, in_thread) -> None:
    monkeypatch.setenv("MODELPORT_PREDICT_THREAD", "always" if in_thread else "never")
    app = ModelServer(Settings(model_dir=str(model_dirs["iris"]), model_name="iris"),
                      load_in_background=False)
    app._load()
    assert app.batcher is not None
    # A model that refuses some valid input (the signature check now turns a null into a 400
    # before any model sees it, so the model's own failure is simulated here).
    native = app.model.predict_fn

    def picky(x):
        if (np.asarray(x) < 0).any():
            raise ValueError("negative measurements are not supported")
        return native(x)

    app.model.predict_fn = picky
    setosa, virginica = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]
    payloads = []
    for i in range(24):
        rows = [setosa] if i % 3 else [virginica, setosa]
        if i == 7:
            rows = [[5.0, -1.0, 1.0, 0.2]]  # the model refuses it
        payloads.append({"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}})

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(
                *(client.post("/invocations", json=p) for p in payloads)
            )

    responses = asyncio.run(go())
    for i, r in enumerate(responses):
        if i == 7:
            assert r.status_code == 500 and "negative" in r.json()["message"]
        elif i % 3:
            assert r.json() == {"predictions": [0]}
        else:
            assert r.json() == {"predictions": [2, 0]}
    assert app.batcher.calls < app.batcher.batched_requests  # some calls served several
    if app._executor is not None:
        app._executor.shutdown()
