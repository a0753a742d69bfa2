"""A model whose signature has float32 (``float``) or int32 (``integer``) columns answers JSON
bodies, whose numbers parse as float64/int64, as MLflow's own scoring server does (the bench of
issue 19 found every request refused by pyfunc's schema enforcement)."""

from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from serving import loader, protocol
from serving.schema import validate


class Sum(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input.sum(axis=1).to_numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_float32_and_int32_columns_take_json_numbers_through_the_pyfunc_path(tmp_path, dtype):
    frame = pd.DataFrame({"x": np.array([0.5, 1.5]).astype(dtype),
                          "n": np.array([1, 2], dtype=dtype)})
    target = tmp_path / "model"
    mlflow.pyfunc.save_model(str(target), python_model=Sum(),
                             signature=infer_signature(frame, np.array([1.5, 3.5])))
    model = loader.load(str(target))
    assert model.input_mode == "pyfunc"
    x = 0.25 if dtype is np.float32 else 2
    for body in ({"dataframe_split": {"columns": ["x", "n"], "data": [[x, 3], [1, 4]]}},
                 {"dataframe_records": [{"x": x, "n": 3}]}, {"instances": [[x, 3]]}):
        raw = json.dumps(body).encode()
        table, _, _ = protocol.parse_mlflow_json(raw)
        got = model.predict(validate(table, model.signature, protocol.may_contain_bools(raw)))
        assert np.asarray(got).tolist()[0] == x + 3
