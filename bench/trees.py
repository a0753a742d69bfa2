"""CPU per request of the XGBoost and LightGBM fast paths (serving/flavors/xgboost.py,
lightgbm.py) against the generic ``mlflow.pyfunc`` path, side by side in one run, in process.

For each model of tests/flavors/trees.py (an XGBClassifier, a native xgb.train regressor, an
LGBMRegressor, a native lgb.train binary classifier), 1 and 100 rows: the same validated batch
goes to the replica's fast path (``LoadedModel.predict`` on the matrix) and to what the replica
does without it (``mlflow.pyfunc`` model's ``predict`` on ``batch.as_frame()``). Both answers are
checked equal first. Figures: process CPU time per call (all threads), median of 5 rounds.

    .venv/bin/python bench/trees.py [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import loader, protocol
from serving.schema import validate
from tests.flavors import trees


def cpu_per_call(fn, calls: int) -> float:
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(calls):
            fn()
        rounds.append((time.process_time() - started) / calls)
    return sorted(rounds)[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    import mlflow.pyfunc

    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
          f"{os.cpu_count()} CPUs; CPU µs per call, median of 5 x {args.calls} calls")
    print(f"{'model':16} {'rows':>4} {'pyfunc':>9} {'fast':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, save in sorted(trees.SAVERS.items()):
            model_dir = str(Path(tmp) / kind)
            save(Path(model_dir))
            fast = loader.load(model_dir)
            assert fast.input_mode == "ndarray", (kind, fast.info)
            generic = mlflow.pyfunc.load_model(model_dir)
            for n in (1, 100):
                frame = trees.rows(n, seed=n)
                body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split"))})
                table, _, _ = protocol.parse_mlflow_json(body.encode())
                batch = validate(table, fast.signature)
                assert np.array_equal(fast.predict(batch), generic.predict(batch.as_frame()))
                t_fast = cpu_per_call(lambda b=batch, m=fast: m.predict(b), args.calls)
                t_pyfunc = cpu_per_call(lambda b=batch, g=generic: g.predict(b.as_frame()),
                                        args.calls)
                print(f"{kind:16} {n:>4} {t_pyfunc * 1e6:>9.0f} {t_fast * 1e6:>9.0f} "
                      f"{t_pyfunc / t_fast:>5.1f}x", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
