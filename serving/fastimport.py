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

Tried and dropped: deferring ``scipy.stats`` (the largest import scikit-learn makes) until first
use; ``sklearn._loss.link`` does ``from scipy.stats import gmean`` at import, so every model
needs it anyway. ``MODELPORT_FAST_IMPORTS=0`` turns the replay off.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable
from importlib import metadata
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
    try:
        import sklearn.utils
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
        import skops.io  # noqa: F401 - the import is the point
    doc = {"versions": _versions(), "all_estimators": estimators}
    Path(path).write_text(json.dumps(doc, sort_keys=True))
    return True


def import_skops(cache_path: str | None = None) -> bool:
    """Import ``skops.io`` replaying a recording; True when the recording was used."""
    if "skops.io" in sys.modules:
        return False
    doc = _read_cache(cache_path or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    if doc is None:
        import skops.io
        return False
    import sklearn.utils

    recorded = [(name, type(cls_name, (), {"__module__": module}))
                for name, module, cls_name in doc["all_estimators"]]
    real_all = sklearn.utils.all_estimators

    def all_estimators(type_filter: Any = None) -> list[tuple[str, type]]:
        # Stand-ins carrying the real module and class names: skops only formats them.
        return list(recorded) if type_filter is None else real_all(type_filter)

    with _patched(sklearn.utils, "all_estimators", all_estimators):
        import skops.io  # noqa: F401
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


def prepare_sklearn(serialization_format: str) -> None:
    """Before a scikit-learn model is deserialized: import skops replaying the recording."""
    if enabled() and serialization_format == "skops":
        import_skops()


def main(argv: list[str] | None = None) -> int:
    import argparse

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
