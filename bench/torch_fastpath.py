"""Benchmark: the PyTorch fast path (``serving/flavors/pytorch.py``) against the generic
``mlflow.pyfunc`` path, side by side, on the same models in one process.

    .venv/bin/python bench/torch_fastpath.py            # ~1 minute
    .venv/bin/python bench/torch_fastpath.py --quick

Saves the two models of ``tests/flavors/test_pytorch.py`` with stock ``mlflow.pytorch`` (an MLP
on 4 float32 columns as a ``[-1, 4]`` tensor, a CNN on ``[-1, 1, 8, 8]``; mlflow's default
``pt2`` format and the ``pickle`` one), loads each both ways and measures the CPU time
(``time.process_time``) of the server's request path per request — parse the JSON body,
validate it against the signature, predict, encode the answer — with 1 and 100 rows. torch
runs with one intra-op thread on both paths (a one-CPU replica), so the figures compare the
call paths, not the thread counts. Prints the load average too: the figures are only
comparable at a similar load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("MODELPORT_WORKERS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def models(root: Path) -> dict[str, Path]:
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    out = {}
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10))
    rng = np.random.default_rng(0)
    for name, net, example in (("mlp", mlp, rng.normal(size=(2, 4))),
                               ("cnn", cnn, rng.normal(size=(2, 1, 8, 8)))):
        example = example.astype(np.float32)
        net.eval()
        with torch.no_grad():
            y = net(torch.from_numpy(example)).numpy()
        for fmt in ("pt2", "pickle"):
            path = root / f"{name}-{fmt}"
            mlflow.pytorch.save_model(net, str(path), signature=infer_signature(example, y),
                                      input_example=example, serialization_format=fmt,
                                      pip_requirements=["torch"])
            out[f"{name}-{fmt}"] = path
    return out


def cpu_per_request(model, body: bytes, seconds: float) -> float:
    """Mean CPU microseconds of parse → validate → predict → encode."""
    from serving import protocol
    from serving.schema import validate

    def once() -> None:
        table, params, _ = protocol.parse_mlflow_json(body)
        batch = validate(table, model.signature, protocol.may_contain_bools(body))
        protocol.encode_predictions(model.predict(batch, params))

    for _ in range(20):
        once()
    n, started, wall = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall < seconds:
        once()
        n += 1
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    seconds = 0.7 if args.quick else 3.0

    import numpy as np
    import orjson
    import torch

    from serving import loader

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        dirs = models(Path(tmp))
        print(f"torch {torch.__version__}, 1 intra-op thread; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"{'model':<12} {'rows':>4} {'pyfunc µs':>10} {'fast µs':>10} {'ratio':>6}  "
              "fast path")
        for name, path in dirs.items():
            fast = loader.load(str(path))
            generic = loader._load_pyfunc(str(path), fast.mlmodel, fast.signature)
            torch.set_num_threads(1)  # the fast path set the host's CPU count: compare paths
            shape = (4,) if name.startswith("mlp") else (1, 8, 8)
            for rows in (1, 100):
                body = orjson.dumps({"inputs": rng.normal(size=(rows, *shape)).astype(
                    np.float32).tolist()})
                a = cpu_per_request(generic, body, seconds)
                b = cpu_per_request(fast, body, seconds)
                print(f"{name:<12} {rows:>4} {a:>10.1f} {b:>10.1f} {a / b:>5.2f}x  "
                      f"{fast.info.get('fast_path', 'none')}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
