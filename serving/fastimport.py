"""Shorter cold start for skops-serialized scikit-learn models.

Measured inside the hardened serving container (read-only root, 2 cores), importing what it
takes to unpickle a model is most of the time from container start to ``/ready``. Part of it is
waste: ``skops.io`` computes its default trusted-type list when imported, by walking and
importing *every* scikit-learn module (``sklearn.utils.all_estimators``: ~170 modules a model
does not use, ~0.2-0.4 s). The list depends only on the installed packages, so the image build
records it once (``python -m serving.fastimport --record FILE`` in
``platform/serving.Dockerfile``) and the server replays it while importing ``skops.io``: the
same skops code builds the same trusted list, and the same ``skops.io.load`` audits the model
file against it. The recording is used only when the installed versions (Python, scikit-learn,
skops, SciPy, NumPy) are the ones it was recorded with; otherwise skops computes it as usual.

Two more costs of the same kind are cut while the model loads (``import_replay()``):

* SciPy rewrites the docstrings of ~600 functions while it is imported (``scipy.stats`` and the
  modules it pulls in): each decorator parses a numpydoc docstring with
  ``scipy._lib._docscrape.FunctionDoc``, edits a section and renders it back (~0.3 CPU-s in the
  container). Parsing and rendering are pure functions of their input, so the image build
  records both, keyed by content: the parsed sections per raw docstring, and the rendered text
  per (name, role, pickled sections). At run time a ``FunctionDoc`` whose input is in the
  recording takes the parsed sections from it (the decorator's own edits still run), and one
  whose edited sections are in it takes the rendered text; anything else is computed as usual.
  The docstrings come out identical; only SciPy's own version is checked (docstring parse and
  render are SciPy code).
* While ``skops.io`` builds its trusted-type list, ``skops.io._utils.whichmodule`` finds the
  module of each of ~250 SciPy ufuncs (they carry no ``__module__``) by trying ``getattr`` on
  every loaded module in import order, one ufunc at a time (~0.2 CPU-s). One pass over
  ``sys.modules`` in the same order finds the same first match for all of them at once
  (``module.__dict__`` intersected with the names wanted, and the real ``getattr`` on modules
  that define ``__getattr__`` or are not plain modules); ufuncs it cannot place exactly fall
  back to skops' own search. This is computed at run time, nothing is recorded.

Both are installed with a ``sys.meta_path`` hook that acts only when those two modules are
imported, so the import order, and everything else, stays as it was; they are removed when the
model has loaded.

Tried and dropped: deferring ``scipy.stats`` (the largest import scikit-learn makes) until first
use; ``sklearn._loss.link`` does ``from scipy.stats import gmean`` at import, so every model
needs it anyway. ``MODELPORT_FAST_IMPORTS=0`` turns all of this off.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.util
import json
import os
import pickle
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any

DEFAULT_CACHE = "/app/serving-import-cache.json"
CACHE_ENV = "MODELPORT_IMPORT_CACHE"
_KEY_PACKAGES = ("scikit-learn", "skops", "scipy", "numpy")


def enabled() -> bool:
    return os.environ.get("MODELPORT_FAST_IMPORTS", "1").strip().lower() not in (
        "0", "false", "no", "off")


# --- recorded skops trusted types --------------------------------------------------------------
def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in _KEY_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = ""
    return out


def record(path: str | os.PathLike[str]) -> bool:
    """Import ``skops.io`` for real and save what its import-time discovery returned."""
    if "skops.io" in sys.modules:
        raise RuntimeError("record() must run before skops.io is imported")
    docs = DocstringRecorder.install()  # before SciPy's decorators run (sklearn imports SciPy)
    try:
        import sklearn.utils  # noqa: PLC0415 - import order is this module's point
    except ImportError:
        return False
    if importlib.util.find_spec("skops") is None:
        return False
    estimators: list[list[str]] = []
    real_all = sklearn.utils.all_estimators

    def all_estimators(type_filter: Any = None) -> list[tuple[str, type]]:
        found = real_all(type_filter)
        if type_filter is None:
            estimators.extend([n, c.__module__, c.__name__] for n, c in found)
        return found

    with _patched(sklearn.utils, "all_estimators", all_estimators):
        import skops.io  # noqa: F401, PLC0415 - the import (with the patch) is the point
    doc = {"versions": _versions(), "all_estimators": estimators}
    Path(path).write_text(json.dumps(doc, sort_keys=True))
    if docs is not None:
        docs.save(docs_cache_path(path))
    return True


def import_skops(cache_path: str | None = None) -> bool:
    """Import ``skops.io`` replaying a recording; True when the recording was used."""
    if "skops.io" in sys.modules:
        return False
    doc = _read_cache(cache_path or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    if doc is None:
        import skops.io  # noqa: PLC0415 - the import is the point
        return False
    import sklearn.utils  # noqa: PLC0415 - import order is this module's point

    recorded = [(name, type(cls_name, (), {"__module__": module}))
                for name, module, cls_name in doc["all_estimators"]]
    real_all = sklearn.utils.all_estimators

    def all_estimators(type_filter: Any = None) -> list[tuple[str, type]]:
        # Stand-ins carrying the real module and class names: skops only formats them.
        return list(recorded) if type_filter is None else real_all(type_filter)

    with _patched(sklearn.utils, "all_estimators", all_estimators):
        import skops.io  # noqa: F401, PLC0415 - the import (with the patch) is the point
    return True


def _read_cache(path: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("versions") != _versions():
        return None
    return doc


class _patched:
    def __init__(self, owner: Any, attr: str, value: Callable[..., Any]) -> None:
        self.owner, self.attr, self.value = owner, attr, value

    def __enter__(self) -> None:
        self.saved = getattr(self.owner, self.attr)
        setattr(self.owner, self.attr, self.value)

    def __exit__(self, *exc: object) -> None:
        setattr(self.owner, self.attr, self.saved)


# --- SciPy docstrings: parse and render recorded by content --------------------------------------
DOCSCRAPE = "scipy._lib._docscrape"
_PICKLE_PROTOCOL = 4
_ROLES = ("func", "meth")


def docs_cache_path(cache_path: str | os.PathLike[str]) -> Path:
    """Where the docstring recording lives: beside the JSON recording."""
    path = Path(cache_path)
    return path.with_name(path.stem + ".docstrings.pickle")


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _render_key(doc: Any, function_doc: type[Any]) -> bytes | None:
    """Key of everything ``FunctionDoc.__str__`` reads: name, role and the parsed sections."""
    if type(doc) is not function_doc or (doc._role and doc._role not in _ROLES):
        return None  # subclasses, and the invalid role that prints a warning: not recorded
    name = getattr(doc._f, "__name__", type(doc).__name__)
    try:
        return _digest(pickle.dumps((name, doc._role, doc._parsed_data), _PICKLE_PROTOCOL))
    except Exception:  # noqa: BLE001 - unpicklable sections: computed as usual
        return None


def _raw_doc(func: Any, doc: Any, config: Any) -> str | None:
    """The raw docstring ``FunctionDoc(func)`` parses (after ``inspect.getdoc`` cleans it),
    when the parse depends on nothing else; None otherwise."""
    if doc is not None or config is not None or func is None:
        return None
    try:
        raw = func.__doc__
    except AttributeError:
        return None
    return raw if type(raw) is str else None


class DocstringRecorder:
    """Image build: record what ``FunctionDoc`` parses and renders during the imports."""

    def __init__(self) -> None:
        self.parsed: dict[bytes, bytes] = {}
        self.rendered: dict[bytes, str] = {}

    @classmethod
    def install(cls) -> DocstringRecorder | None:
        try:
            import scipy._lib._docscrape as docscrape  # noqa: PLC0415 - optional; import order
        except ImportError:  # no SciPy, or one without this module: nothing to record
            return None
        function_doc = getattr(docscrape, "FunctionDoc", None)
        if not isinstance(function_doc, type):
            return None
        recorder = cls()
        patched: Any = function_doc  # SciPy's private class: its methods are replaced below
        real_init, real_str = patched.__init__, patched.__str__

        def __init__(self: Any, func: Any, role: str = "func", doc: Any = None,
                     config: Any = None) -> None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                real_init(self, func, role, doc, config)
            raw = _raw_doc(func, doc, config)
            if raw is not None and not caught and type(self) is patched:
                recorder.parsed[_digest(raw.encode("utf-8", "surrogatepass"))] = pickle.dumps(
                    self._parsed_data, _PICKLE_PROTOCOL)

        def __str__(self: Any) -> str:
            out = real_str(self)
            key = _render_key(self, function_doc)
            if key is not None:
                recorder.rendered[key] = out
            return out

        patched.__init__, patched.__str__ = __init__, __str__
        return recorder

    def save(self, path: Path) -> None:
        import scipy  # noqa: PLC0415 - optional; loaded already, by the recording

        doc = {"versions": _docs_versions(scipy.__version__), "parsed": self.parsed,
               "rendered": self.rendered}
        path.write_bytes(pickle.dumps(doc, _PICKLE_PROTOCOL))


def _docs_versions(scipy_version: str) -> dict[str, str]:
    return {"python": sys.version.split()[0], "scipy": scipy_version}


class DocstringReplay:
    """Run time: ``FunctionDoc`` takes recorded parses/renders; misses are computed as usual."""

    def __init__(self, parsed: dict[bytes, bytes], rendered: dict[bytes, str]) -> None:
        self.parsed, self.rendered = parsed, rendered
        self.hits = self.misses = 0
        self.restore: Callable[[], None] | None = None

    @classmethod
    def read(cls, path: Path, scipy_version: str) -> DocstringReplay | None:
        try:
            doc = pickle.loads(path.read_bytes())  # noqa: S301 - written by the image build
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            return None
        if not isinstance(doc, dict) or doc.get("versions") != _docs_versions(scipy_version):
            return None
        return cls(doc["parsed"], doc["rendered"])

    def install(self, docscrape: types.ModuleType) -> None:
        function_doc = docscrape.FunctionDoc
        real_init, real_str = function_doc.__init__, function_doc.__str__
        replay = self

        def __init__(self: Any, func: Any, role: str = "func", doc: Any = None,
                     config: Any = None) -> None:
            raw = _raw_doc(func, doc, config)
            blob = None
            if raw is not None and type(self) is function_doc:
                blob = replay.parsed.get(_digest(raw.encode("utf-8", "surrogatepass")))
            if blob is None:
                replay.misses += 1
                real_init(self, func, role, doc, config)
                return
            replay.hits += 1
            self._f, self._role = func, role
            self._parsed_data = pickle.loads(blob)  # noqa: S301 - written by the image build

        def __str__(self: Any) -> str:
            key = _render_key(self, function_doc)
            out = replay.rendered.get(key) if key is not None else None
            return real_str(self) if out is None else out

        function_doc.__init__, function_doc.__str__ = __init__, __str__

        def restore() -> None:
            function_doc.__init__, function_doc.__str__ = real_init, real_str

        self.restore = restore


# --- skops: the modules of SciPy's ufuncs, found in one pass -----------------------------------
SKOPS_TRUSTED = "skops.io._trusted_types"
SKOPS_UTILS = "skops.io._utils"


def first_modules(objects: Iterable[Any]) -> dict[int, tuple[Any, str, str]]:
    """For each object without ``__module__``, the module skops' ``whichmodule(obj,
    obj.__name__)`` would name: the first entry of ``sys.modules`` (in its order) whose
    attribute ``obj.__name__`` is `obj`. Objects it cannot settle exactly are left out.

    Returns ``{id(obj): (obj, name, module name)}``."""
    wanted: dict[str, list[Any]] = {}
    for obj in objects:
        name = _unplaced_name(obj)
        if type(name) is not str or "." in name or hasattr(types.ModuleType, name):
            continue  # dotted names and module attributes: not a plain __dict__ lookup
        if not any(o is obj for o in wanted.setdefault(name, [])):
            wanted[name].append(obj)
    found: dict[int, tuple[Any, str, str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # as whichmodule does
        for module_name, module in sys.modules.copy().items():
            if not wanted:
                break
            if module_name in ("__main__", "__mp_main__") or module is None:
                continue
            namespace = module.__dict__ if type(module) is types.ModuleType else None
            if namespace is not None and "__getattr__" not in namespace:
                names: Iterable[str] = wanted.keys() & namespace.keys()
            else:  # lazy modules, module-level __getattr__: the real getattr, as skops does
                names, namespace = list(wanted), None
            for name in names:
                if namespace is not None:
                    value = namespace[name]
                else:
                    try:
                        value = getattr(module, name, None)
                    except (AttributeError, ImportError):
                        continue
                candidates = wanted.get(name)
                if not candidates:
                    continue
                for obj in [o for o in candidates if o is value]:
                    found[id(obj)] = (obj, name, module_name)
                    candidates.remove(obj)
                if not candidates:
                    del wanted[name]
    return found


def _unplaced_name(obj: Any) -> str | None:
    """``obj.__name__`` when `obj` has no ``__module__`` (what skops searches for), else None."""
    with contextlib.suppress(Exception):  # odd objects are left to skops' own search
        if getattr(obj, "__module__", None) is None:
            return getattr(obj, "__name__", None)
    return None


class SkopsModuleSearch:
    """While ``skops.io._trusted_types`` runs, skops' ``whichmodule`` answers from
    ``first_modules`` (computed per ``get_public_type_names`` call, for that module's
    attributes) and falls back to its own search for anything else."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[Any, str, str]] = {}
        self.saved: tuple[Any, Any, Any] | None = None

    def before(self, module: types.ModuleType) -> None:
        utils: Any = sys.modules.get(SKOPS_UTILS)  # skops' private module, patched below
        real_which = getattr(utils, "whichmodule", None)
        real_public = getattr(utils, "get_public_type_names", None)
        if utils is None or not callable(real_which) or not callable(real_public):
            return
        known = self.known

        def whichmodule(obj: Any, name: str) -> str:
            module_name = getattr(obj, "__module__", None)
            if module_name is not None:
                return module_name
            hit = known.get(id(obj))
            if hit is not None and hit[0] is obj and hit[1] == name:
                return hit[2]
            return real_which(obj, name)

        def get_public_type_names(module: types.ModuleType, oftype: type) -> list[str]:
            with contextlib.suppress(Exception):  # a failure only means no shortcut
                known.update(first_modules(list(vars(module).values())))
            return real_public(module, oftype)

        self.saved = (utils, real_which, real_public)
        utils.whichmodule = whichmodule
        utils.get_public_type_names = get_public_type_names

    def after(self, module: types.ModuleType) -> None:
        if self.saved is None:
            return
        utils, real_which, real_public = self.saved
        utils.whichmodule = real_which
        utils.get_public_type_names = real_public
        if getattr(module, "get_public_type_names", None) is not real_public:
            # The name it imported from _utils (a module's attributes are its __dict__).
            vars(module)["get_public_type_names"] = real_public
        self.saved = None
        self.known.clear()


# --- the import hook ----------------------------------------------------------------------------
Hook = Callable[[types.ModuleType], None]


class _AroundImport(importlib.abc.MetaPathFinder):
    """Runs `before`/`after` callbacks around the execution of named modules, once each. It
    finds nothing itself: the other finders find and load the module as they would have."""

    def __init__(self, hooks: dict[str, tuple[Hook | None, Hook | None]]) -> None:
        self.hooks = hooks
        self.lock = threading.Lock()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> ModuleSpec | None:
        with self.lock:
            hook = self.hooks.pop(fullname, None)
        if hook is None:
            return None
        spec = None
        for finder in [f for f in sys.meta_path if f is not self]:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        loader: Any = getattr(spec, "loader", None)
        if spec is None or not hasattr(loader, "exec_module"):
            return spec
        before, after = hook
        real_exec = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            if module.__name__ != fullname:  # a loader shared with other modules (zipimport)
                real_exec(module)
                return
            if before is not None:
                before(module)
            try:
                real_exec(module)
            finally:
                with contextlib.suppress(AttributeError):
                    del loader.exec_module  # the instance attribute set below
                if after is not None:
                    after(module)

        with contextlib.suppress(AttributeError):  # a loader that takes no attributes: as is
            loader.exec_module = exec_module
        return spec


def _replay_docstrings(cache_path: Path, state: dict[str, Any]) -> Hook:
    def after(module: types.ModuleType) -> None:
        scipy = sys.modules.get("scipy")
        if scipy is None or getattr(module, "FunctionDoc", None) is None:
            return
        replay = DocstringReplay.read(cache_path, str(getattr(scipy, "__version__", "")))
        if replay is not None:
            replay.install(module)
            state["docstrings"] = replay

    return after


@contextlib.contextmanager
def import_replay(cache_path: str | None = None) -> Iterator[dict[str, Any]]:
    """While the model loads: SciPy's docstring work replayed, skops' ufunc search in one pass.

    Yields a dict that holds the ``DocstringReplay`` (under "docstrings") once SciPy's
    ``_docscrape`` was imported with a usable recording. Modules imported before this do not
    change."""
    state: dict[str, Any] = {}
    if not enabled():
        yield state
        return
    path = docs_cache_path(cache_path or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    hooks: dict[str, tuple[Hook | None, Hook | None]] = {}
    if DOCSCRAPE not in sys.modules and path.is_file():
        hooks[DOCSCRAPE] = (None, _replay_docstrings(path, state))
    if SKOPS_TRUSTED not in sys.modules:
        search = SkopsModuleSearch()
        hooks[SKOPS_TRUSTED] = (search.before, search.after)
    if not hooks:
        yield state
        return
    finder = _AroundImport(hooks)
    sys.meta_path.insert(0, finder)
    try:
        yield state
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        replay = state.get("docstrings")
        if replay is not None and replay.restore is not None:
            replay.restore()


def prepare_sklearn(serialization_format: str) -> None:
    """Before a scikit-learn model is deserialized: import skops replaying the recording."""
    if enabled() and serialization_format == "skops":
        import_skops()


def main(argv: list[str] | None = None) -> int:
    # Not at the top: importing argparse first changes what the recording sees (one SciPy
    # docstring then differs from the replay; tests/serving/test_serving_fastpaths.py).
    import argparse  # noqa: PLC0415 - import order (see above)

    p = argparse.ArgumentParser(prog="python -m serving.fastimport")
    p.add_argument("--record", metavar="FILE", required=True,
                   help="write the skops import-time discovery of this environment to FILE")
    args = p.parse_args(argv)
    if record(args.record):
        print(f"recorded skops trusted-type discovery to {args.record}")
    else:
        print("scikit-learn or skops not installed: nothing recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
