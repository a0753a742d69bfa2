"""Opportunistic request batching for models called on a numpy array.

A scikit-learn ``predict`` call costs about the same for 1 row as for 50: most of its time is
input checking and per-estimator overhead, not arithmetic. When several requests are waiting
(several connections, one worker), they are stacked into one array, predicted with one call,
and the output is split back by rows. Nothing waits on a timer: the first request schedules a
flush with ``call_soon``, so requests that arrived in the same event-loop turn (or while the
previous predict ran) join it, and a lone request goes through at once.

If the batched call raises, each request is predicted on its own, so an error is reported only
to the request that caused it. Outputs that cannot be split by rows fall back the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from serving.schema import Batch

PredictFn = Callable[[Batch, dict[str, Any] | None], Any]


class Batcher:
    def __init__(
        self, predict: PredictFn, executor: Executor | None = None, max_rows: int = 1024
    ) -> None:
        self.predict = predict
        self.executor = executor
        self.max_rows = max(1, max_rows)
        self.pending: list[tuple[Batch, asyncio.Future[Any]]] = []
        self.scheduled = False
        self.busy = False
        self.calls = 0
        self.batched_requests = 0

    async def submit(self, batch: Batch) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((batch, future))
        if not self.scheduled and not self.busy:
            self.scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _take(self) -> list[tuple[Batch, asyncio.Future[Any]]]:
        taken: list[tuple[Batch, asyncio.Future[Any]]] = []
        rows = 0
        while self.pending:
            batch, future = self.pending[0]
            if taken and rows + batch.n_rows > self.max_rows:
                break
            self.pending.pop(0)
            if future.cancelled():
                continue
            taken.append((batch, future))
            rows += batch.n_rows
        return taken

    def _flush(self) -> None:
        self.scheduled = False
        items = self._take()
        if not items:
            return
        self.calls += 1
        self.batched_requests += len(items)
        if self.executor is None:
            _settle(items, run_items(self.predict, [b for b, _ in items]))
            self._after()
            return
        self.busy = True
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            self.executor, run_items, self.predict, [b for b, _ in items]
        )

        def done(fut: asyncio.Future[list[tuple[bool, Any]]]) -> None:
            self.busy = False
            exc = fut.exception()
            if exc is not None:
                for _, f in items:
                    if not f.done():
                        f.set_exception(exc)
            else:
                _settle(items, fut.result())
            self._after()

        work.add_done_callback(done)

    def _after(self) -> None:
        if self.pending and not self.scheduled and not self.busy:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)


def run_items(predict: PredictFn, batches: list[Batch]) -> list[tuple[bool, Any]]:
    """Predict several batches with one call when possible: [(ok, result or exception)]."""
    if len(batches) > 1:
        try:
            stacked = np.concatenate([b.as_matrix() for b in batches], axis=0)
            total = stacked.shape[0]
            out = predict(Batch(n_rows=total, names=batches[0].names, matrix=stacked), None)
        except Exception:  # noqa: BLE001 - retry one by one to blame the right request
            out = None
        if isinstance(out, np.ndarray) and out.ndim >= 1 and out.shape[0] == total:
            results: list[tuple[bool, Any]] = []
            start = 0
            for b in batches:
                results.append((True, out[start:start + b.n_rows]))
                start += b.n_rows
            return results
    results = []
    for b in batches:
        try:
            results.append((True, predict(b, None)))
        except Exception as exc:  # noqa: BLE001 - delivered to the request's own future
            results.append((False, exc))
    return results


def _settle(
    items: list[tuple[Batch, asyncio.Future[Any]]], results: list[tuple[bool, Any]]
) -> None:
    for (_, future), (ok, value) in zip(items, results, strict=True):
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
