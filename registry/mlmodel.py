"""Read an MLflow model directory's metadata without loading the model.

``MLmodel`` is YAML (read with the safe loader), the input example and requirements are text:
nothing here unpickles or imports model code, so it may run in the web and worker processes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import InvalidInput

PYFUNC = "python_function"


class NotAnMlflowModel(InvalidInput):
    code = "bad_mlmodel"


@dataclass
class ModelMetadata:
    flavor: str
    flavors: list[str]
    signature: dict[str, Any] | None
    input_example: dict[str, Any] | None
    requirements: list[str]
    run_id: str
    mlflow_version: str
    extra: dict[str, Any] = field(default_factory=dict)


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise NotAnMlflowModel(f"MLmodel is not valid YAML: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("flavors"), dict):
        raise NotAnMlflowModel("MLmodel has no 'flavors' section.")
    return document


def _signature(document: dict[str, Any]) -> dict[str, Any] | None:
    raw = document.get("signature")
    if not isinstance(raw, dict):
        return None
    parsed: dict[str, Any] = {}
    for key in ("inputs", "outputs", "params"):
        value = raw.get(key)
        if isinstance(value, str):
            try:
                parsed[key] = json.loads(value)
            except json.JSONDecodeError:
                raise NotAnMlflowModel(f"MLmodel signature.{key} is not JSON.") from None
        elif value is not None:
            parsed[key] = value
    return parsed


def example_to_request(example: Any) -> dict[str, Any] | None:
    """Turn an input example (any MLflow layout) into a body ready for ``/invocations``."""
    if example is None:
        return None
    if isinstance(example, dict):
        if {"dataframe_split", "dataframe_records", "instances", "inputs"} & set(example):
            return example
        if {"columns", "data"} <= set(example):
            return {"dataframe_split": {"columns": example["columns"], "data": example["data"]}}
        return {"dataframe_records": [example]}
    if isinstance(example, list) and example and isinstance(example[0], dict):
        return {"dataframe_records": example}
    if isinstance(example, list):
        return {"inputs": example}
    return None


def _input_example(model_dir: Path, document: dict[str, Any]) -> dict[str, Any] | None:
    for name in ("serving_input_example.json", "input_example.json"):
        path = model_dir / name
        if path.is_file():
            try:
                return example_to_request(json.loads(path.read_text()))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise NotAnMlflowModel(f"{name} is not valid JSON.") from None
    info = document.get("saved_input_example_info")
    if isinstance(info, dict) and info.get("artifact_path"):
        path = model_dir / str(info["artifact_path"])
        if path.is_file():
            return example_to_request(json.loads(path.read_text()))
    return None


def read_requirements(model_dir: Path) -> list[str]:
    path = model_dir / "requirements.txt"
    if not path.is_file():
        return []
    # Option lines (-e, --index-url …) are kept: the registry refuses them, naming the line.
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def read_metadata(model_dir: Path) -> ModelMetadata:
    path = model_dir / "MLmodel"
    if not path.is_file():
        raise NotAnMlflowModel("No MLmodel file: this is not an MLflow model directory.",
                               code="missing_mlmodel")
    document = _load_yaml(path)
    flavors = [name for name in document["flavors"] if isinstance(name, str)]
    specific = [name for name in flavors if name != PYFUNC]
    if PYFUNC not in flavors:
        raise NotAnMlflowModel("The model has no python_function flavor, so it cannot be "
                               "served; save it with an MLflow flavor that provides one.")
    return ModelMetadata(
        flavor=specific[0] if specific else PYFUNC,
        flavors=flavors,
        signature=_signature(document),
        input_example=_input_example(model_dir, document),
        requirements=read_requirements(model_dir),
        run_id=str(document.get("run_id") or ""),
        mlflow_version=str(document.get("mlflow_version") or ""),
    )


def columns_of(signature: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Input columns ``[{"name", "type", "required"}]`` of a column-based signature."""
    if not signature:
        return []
    inputs = signature.get("inputs") or []
    return [{"name": c.get("name"), "type": c.get("type"), "required": c.get("required", True)}
            for c in inputs if isinstance(c, dict) and c.get("name")]


# One plausible value per MLflow column type: a first request that passes the signature.
_SAMPLE_VALUES: dict[str, Any] = {
    "double": 0.5, "float": 0.5, "long": 1, "integer": 1, "boolean": True, "string": "text",
    "binary": "", "datetime": "2024-01-01T00:00:00",
}
_TENSOR_VALUES: dict[str, Any] = {"float64": 0.5, "float32": 0.5, "float16": 0.5, "int64": 1,
                                  "int32": 1, "int16": 1, "int8": 1, "uint8": 1, "bool": True,
                                  "str": "text", "object": "text"}


def _tensor_example(spec: dict[str, Any]) -> dict[str, Any] | None:
    tensor = spec.get("tensor-spec") or {}
    shape = tensor.get("shape") or []
    value = _TENSOR_VALUES.get(str(tensor.get("dtype")))
    if value is None or len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1 \
            or shape[1] > 1000:
        return None
    return {"inputs": [[value] * shape[1]]}


def example_from_signature(signature: dict[str, Any] | None) -> dict[str, Any] | None:
    """A one-row ``/invocations`` body built from the signature's input schema (the column
    names and a typed value each), for models saved without an input example; None when the
    schema says too little (no inputs, unknown types, tensors of unknown width)."""
    inputs = (signature or {}).get("inputs") or []
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        return None
    if inputs[0].get("type") == "tensor":
        return _tensor_example(inputs[0]) if len(inputs) == 1 else None
    columns = [c for c in inputs if isinstance(c, dict) and c.get("name")]
    if len(columns) != len(inputs):
        return None
    row = []
    for column in columns:
        if str(column.get("type")) not in _SAMPLE_VALUES:
            return None
        row.append(_SAMPLE_VALUES[str(column["type"])])
    return {"dataframe_split": {"columns": [str(c["name"]) for c in columns], "data": [row]}}
