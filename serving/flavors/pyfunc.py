"""Custom ``mlflow.pyfunc.PythonModel`` classes (loader ``mlflow.pyfunc.model``).

No fast path: the model is the team's own Python, served through ``mlflow.pyfunc`` (its
``code_paths`` on ``sys.path``, its artifacts through ``load_context``). What this module adds
is the plain-language reason for the usual failure: the class, or a module it imports, is not
in the model because it was logged without ``code_paths`` (it imported fine on the laptop that
logged it, from the working directory).
"""

from __future__ import annotations

from typing import Any


def load(model_dir: str, mlmodel: dict[str, Any], signature: Any) -> None:
    """None: ``mlflow.pyfunc`` serves custom classes (their predict is the team's code)."""
    return None


def missing_module(exc: BaseException) -> str | None:
    """The name of the module whose import failed, anywhere in the exception's chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            return current.name
        current = current.__cause__ or current.__context__
    return None


def explain(exc: BaseException, mlmodel: dict[str, Any]) -> str | None:
    """Name the missing module and say how to ship it (``code_paths``)."""
    name = missing_module(exc)
    if name is None:
        return None
    top = name.split(".")[0]
    conf = (mlmodel.get("flavors") or {}).get("python_function") or {}
    shipped = f" (the model ships code in '{conf['code']}', but not this module)" \
        if conf.get("code") else ""
    path = f"{top}.py" if top == name else top  # a module, or its package's folder
    return (f"the model's Python code needs module '{name}', which is not in the model"
            f"{shipped}: log the model with code_paths=['{path}'] (the file or package folder "
            f"that defines '{top}') so that it travels with the model; if '{top}' is a "
            "package from the index, add it to extra_pip_requirements instead")
