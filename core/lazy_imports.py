"""Heavy scientific modules imported on first use, not when a process starts.

Every Django process (the edge, web, both Celery workers, beat) imports every app's services at
start-up — admin autodiscovery, Celery's task autodiscovery — and with them numpy, pandas and
scipy: ~155 MB per process, which the edge, beat and the reconciler never use (issue 26: `make
run`'s memory). A module that needs one says ``np = lazy_module("numpy")``; the real import
happens at the first attribute access, after which the proxy holds the module's attributes
itself (no per-access cost).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Deferred(ModuleType):
    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)
        return getattr(module, attr)


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports ``name`` when it is first used."""
    return _Deferred(name)
