"""Speed paths of the model loader: forests without joblib, skops discovery replayed.

Both must be invisible except in time: the forest path returns bit-for-bit what scikit-learn's
own method returns, and the replayed skops import trusts exactly the types a real import would
(and still refuses a model that needs an untrusted type).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from serving.loader import _sequential_forest, load

REPO_ROOT = Path(__file__).resolve().parents[2]
TREE_TYPE = "sklearn.tree._tree.Tree"


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True, as_frame=True)


def save(model, x, path: Path, **kwargs) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    fn = kwargs.get("pyfunc_predict_fn", "predict")
    mlflow.sklearn.save_model(model, path, signature=infer_signature(x, getattr(model, fn)(x)),
                              pip_requirements=["scikit-learn"],
                              skops_trusted_types=[TREE_TYPE], **kwargs)
    return path


@pytest.mark.parametrize("fn", ["predict", "predict_proba"])
def test_random_forest_is_served_by_the_tree_loop_with_identical_output(
        cancer, tmp_path, fn) -> None:
    from sklearn.ensemble import RandomForestClassifier

    x, y = cancer
    rf = RandomForestClassifier(n_estimators=25, random_state=0).fit(x, y)
    model = load(str(save(rf, x, tmp_path / "rf", pyfunc_predict_fn=fn)))
    assert model.info.get("fast_path") == "sequential-forest"
    assert model.input_mode == "ndarray"
    got, want = model.predict_fn(x.to_numpy()), getattr(rf, fn)(x)
    assert got.dtype == want.dtype
    assert np.array_equal(got, want)


def test_extra_trees_and_forest_regressor_match_scikit_learn_bit_for_bit(cancer) -> None:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestRegressor

    x, y = cancer
    arr = x.to_numpy()
    et = ExtraTreesClassifier(n_estimators=15, random_state=1, n_jobs=2).fit(arr, y)
    reg = RandomForestRegressor(n_estimators=15, random_state=2).fit(arr, x["mean area"])
    for estimator, fn in ((et, "predict"), (et, "predict_proba"), (reg, "predict")):
        fast = _sequential_forest(estimator, fn)
        assert fast is not None
        assert np.array_equal(fast(arr), getattr(estimator, fn)(arr))


def test_forest_subclass_with_its_own_predict_keeps_its_own_method(cancer) -> None:
    from sklearn.ensemble import RandomForestClassifier

    class Thresholded(RandomForestClassifier):
        def predict(self, X):
            return (self.predict_proba(X)[:, 1] > 0.9).astype(int)

    x, y = cancer
    model = Thresholded(n_estimators=5, random_state=0).fit(x.to_numpy(), y)
    assert _sequential_forest(model, "predict") is None
    assert _sequential_forest(model, "predict_proba") is not None  # not overridden


def test_multi_output_forest_and_other_estimators_get_no_fast_path(cancer) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge

    x, y = cancer
    arr = x.to_numpy()[:100]
    two = np.c_[y[:100], 1 - y[:100]]
    assert _sequential_forest(RandomForestClassifier(3).fit(arr, two), "predict") is None
    assert _sequential_forest(Ridge().fit(arr, y[:100]), "predict") is None


REPLAY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from serving import fastimport
    replayed = fastimport.import_skops(sys.argv[1])
    from skops.io import _trusted_types as t
    lists = {k: list(v) for k, v in vars(t).items() if k.endswith("_TYPE_NAMES")}
    out = {"replayed": replayed, "lists": lists}
    if len(sys.argv) > 2:
        from serving.loader import load
        try:
            load(sys.argv[2])
            out["load"] = "loaded"
        except Exception as exc:
            out["load"] = type(exc).__name__ + ": " + str(exc)
    print(json.dumps(out))
    """
)


def run_python(*args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT),
                                              **(env or {})}, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_replayed_skops_import_trusts_exactly_what_a_real_import_trusts(tmp_path) -> None:
    cache = tmp_path / "cache.json"
    run_python("-m", "serving.fastimport", "--record", str(cache))
    real = json.loads(run_python("-c", REPLAY_SCRIPT, str(tmp_path / "missing.json")))
    replay = json.loads(run_python("-c", REPLAY_SCRIPT, str(cache)))
    assert real["replayed"] is False and replay["replayed"] is True
    assert replay["lists"] == real["lists"]
    assert len(real["lists"]["SKLEARN_ESTIMATOR_TYPE_NAMES"]) > 100

    stale = json.loads(cache.read_text())
    stale["versions"]["scikit-learn"] = "0.0.1"
    cache.write_text(json.dumps(stale))
    assert json.loads(run_python("-c", REPLAY_SCRIPT, str(cache)))["replayed"] is False


def test_replayed_skops_import_still_refuses_a_model_needing_an_untrusted_type(
        cancer, tmp_path) -> None:
    import yaml
    from sklearn.ensemble import RandomForestClassifier

    x, y = cancer
    rf = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    path = save(rf, x, tmp_path / "rf")
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = None  # the Tree type is not trusted
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    cache = tmp_path / "cache.json"
    run_python("-m", "serving.fastimport", "--record", str(cache))
    out = json.loads(run_python("-c", REPLAY_SCRIPT, str(cache), str(path)))
    assert out["replayed"] is True
    assert out["load"].startswith("UntrustedTypesFoundException"), out["load"]
    assert TREE_TYPE in out["load"]
