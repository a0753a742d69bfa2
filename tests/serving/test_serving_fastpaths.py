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


IMPORT_REPLAY_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys, types
    from serving import fastimport
    with fastimport.import_replay(sys.argv[1]) as state:
        fastimport.import_skops(sys.argv[1])
        import scipy.stats  # noqa: F401 - imported by scikit-learn already
    from skops.io import _trusted_types as t
    import scipy._lib._docscrape as docscrape
    import skops.io._utils as utils
    docs = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "scipy" and isinstance(module, types.ModuleType):
            for attr, value in list(vars(module).items()):
                doc = getattr(value, "__doc__", None)
                if isinstance(doc, str):  # SciPy's examples print fresh random draws
                    doc = [x for x in doc.splitlines() if "# may vary" not in x]
                    doc = repr(doc)
                    docs[name + "." + attr] = hashlib.sha256(doc.encode()).hexdigest()
    replay = state.get("docstrings")
    print(json.dumps({
        "lists": {k: list(v) for k, v in vars(t).items() if k.endswith("_TYPE_NAMES")},
        "docs": docs,
        "hits": replay.hits if replay else 0,
        "patched": [f.__qualname__ for f in (docscrape.FunctionDoc.__init__,
                    docscrape.FunctionDoc.__str__, utils.whichmodule,
                    utils.get_public_type_names, t.get_public_type_names)],
        "finders": [type(f).__name__ for f in sys.meta_path],
    }))
    """
)


def test_replayed_scipy_docstrings_and_skops_module_search_change_nothing(tmp_path) -> None:
    """The recorded SciPy docstring parse/render and the one-pass ufunc module search give
    byte-identical docstrings and the same skops trusted lists, and leave no hook behind."""
    cache = tmp_path / "cache.json"
    run_python("-m", "serving.fastimport", "--record", str(cache))
    assert (tmp_path / "cache.docstrings.pickle").is_file()
    real = json.loads(run_python("-c", IMPORT_REPLAY_SCRIPT, str(tmp_path / "missing.json"),
                                 env={"MODELPORT_FAST_IMPORTS": "0"}))
    fast = json.loads(run_python("-c", IMPORT_REPLAY_SCRIPT, str(cache)))
    assert real["hits"] == 0 and fast["hits"] > 300
    assert fast["lists"] == real["lists"]
    assert len(fast["lists"]["SCIPY_UFUNC_TYPE_NAMES"]) > 100
    # The real run imports every scikit-learn module (skops' discovery), so it has more.
    common = fast["docs"].keys() & real["docs"].keys()
    assert len(common) > 5000
    assert {k for k in common if fast["docs"][k] != real["docs"][k]} == set()
    assert fast["patched"] == ["FunctionDoc.__init__", "FunctionDoc.__str__", "whichmodule",
                               "get_public_type_names", "get_public_type_names"]
    assert "_AroundImport" not in fast["finders"]


def test_a_stale_docstring_recording_is_not_used(tmp_path) -> None:
    import pickle

    cache = tmp_path / "cache.json"
    run_python("-m", "serving.fastimport", "--record", str(cache))
    docs = tmp_path / "cache.docstrings.pickle"
    recording = pickle.loads(docs.read_bytes())
    recording["versions"]["scipy"] = "0.0.1"
    docs.write_bytes(pickle.dumps(recording))
    out = json.loads(run_python("-c", IMPORT_REPLAY_SCRIPT, str(cache)))
    assert out["hits"] == 0


def test_one_pass_module_search_names_the_module_skops_whichmodule_names(monkeypatch) -> None:
    """Objects without ``__module__``: the first module in sys.modules order with the attribute,
    through module ``__getattr__`` and non-module entries too; what it cannot settle is left
    to skops."""
    import types

    from skops.io._utils import whichmodule

    from serving.fastimport import first_modules

    def make(name: str) -> object:
        return type(name, (), {"__module__": None, "__name__": name})()

    a, b, c, alias = make("fa"), make("fb"), make("fc"), make("fd")
    alias.__name__ = "not_an_attribute_anywhere"
    lazy = types.ModuleType("mp_test_lazy")
    lazy.__getattr__ = lambda name: b if name == "fb" else (_ for _ in ()).throw(
        AttributeError(name))

    class NotAModule:
        fc = c

    first = types.ModuleType("mp_test_first")
    first.fa = a
    later = types.ModuleType("mp_test_later")
    later.fa, later.fb, later.fc, later.fd = a, b, c, alias
    # Appended in this order after everything already imported.
    for name, module in (("mp_test_first", first), ("mp_test_lazy", lazy),
                         ("mp_test_other", NotAModule()), ("mp_test_later", later)):
        monkeypatch.setitem(sys.modules, name, module)
    found = first_modules([a, b, c, alias])
    assert {found[id(o)][2] for o in (a, b, c)} == {"mp_test_first", "mp_test_lazy",
                                                     "mp_test_other"}
    for obj in (a, b, c):
        assert found[id(obj)][2] == whichmodule(obj, obj.__name__)
    assert id(alias) not in found
