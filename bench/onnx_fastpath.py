"""Benchmark: the ONNX fast path (serving/flavors/onnx.py) against the generic mlflow.pyfunc
path, in one process, side by side.

    .venv/bin/python bench/onnx_fastpath.py            # ~2 s per cell
    .venv/bin/python bench/onnx_fastpath.py --seconds 0.5

Converts the two models of tests/flavors/test_onnx.py (iris: StandardScaler + logistic
regression, StandardScaler + ridge) with skl2onnx, saves them with stock ``mlflow.onnx`` and
loads each both ways, as the model server would. A cell is what a request costs the worker
after parsing: validated batch → ``predict`` → JSON body; CPU per request is process CPU time
(every thread's, so ONNX Runtime's intra-op threads count) over calls. ``MODELPORT_WORKERS``
sets the fast path's thread share (a 1-CPU container gets 1 intra-op thread; mlflow.onnx's
session always takes ONNX Runtime's default, one per host core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import mlflow.onnx
import numpy as np
import onnxruntime as ort
from mlflow.models import infer_signature
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from serving import protocol  # noqa: E402 - after the sys.path line
from serving.flavors import onnx as onnx_flavor  # noqa: E402
from serving.loader import _load_pyfunc, read_mlmodel  # noqa: E402
from serving.schema import Batch, Signature  # noqa: E402


def save_models(root: Path) -> dict[str, Path]:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    reg = make_pipeline(StandardScaler(), Ridge(alpha=0.5)).fit(x, x[:, 0] * 2 + y)
    out = {}
    for name, onx in (("classifier", to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}})),
                      ("regressor", to_onnx(reg, x[:1]))):
        sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        outputs = dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x[:3]}),
                           strict=True))
        path = root / name
        mlflow.onnx.save_model(onx, str(path), input_example=x[:3],
                               signature=infer_signature(x[:3], outputs))
        out[name] = path
    return out


def cell(model: object, batch: Batch, seconds: float) -> tuple[float, float]:
    """(CPU µs per request, wall p50 µs) of predict + JSON encoding."""
    predict = model.predict  # type: ignore[attr-defined]
    for _ in range(20):
        protocol.encode_predictions(predict(batch))
    walls: list[float] = []
    cpu0, end = time.process_time(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        protocol.encode_predictions(predict(batch))
        walls.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    return cpu / len(walls) * 1e6, statistics.median(walls) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    print(f"# load average {os.getloadavg()}; fast path intra-op threads "
          f"{onnx_flavor.threads()} (MODELPORT_WORKERS={os.environ.get('MODELPORT_WORKERS')}), "
          f"host cores {os.cpu_count()}")
    print(f"{'model':<11} {'rows':>4}  {'pyfunc CPU µs':>13} {'fast CPU µs':>11} {'ratio':>6}"
          f"  {'pyfunc p50 µs':>13} {'fast p50 µs':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in save_models(Path(tmp)).items():
            mlmodel = read_mlmodel(path)
            signature = Signature.from_mlmodel(mlmodel)
            fast = onnx_flavor.load(str(path), mlmodel, signature)
            assert fast is not None, "fast path refused the model"
            slow = _load_pyfunc(str(path), mlmodel, signature)
            for rows in (1, 100):
                x = rng.normal(5.0, 2.0, (rows, 4)).astype(np.float32)
                batch = Batch(n_rows=rows, tensor=x)
                assert onnx_flavor.equal(slow.predict(batch), fast.predict(batch))
                slow_cpu, slow_p50 = cell(slow, batch, args.seconds)
                fast_cpu, fast_p50 = cell(fast, batch, args.seconds)
                print(f"{name:<11} {rows:>4}  {slow_cpu:>13.1f} {fast_cpu:>11.1f} "
                      f"{slow_cpu / fast_cpu:>5.2f}x  {slow_p50:>13.1f} {fast_p50:>11.1f}")


if __name__ == "__main__":
    main()
