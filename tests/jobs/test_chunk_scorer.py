"""``serving.batch``'s pure parts: the prediction columns for each shape a model returns (API.md:
``prediction``, or ``prediction_<name>`` per output) and the batch a chunk hands the model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from serving.batch import batch_of, prediction_columns
from serving.schema import Signature


def test_prediction_columns_by_shape():
    assert list(prediction_columns(np.array([1, 2]), 2)) == ["prediction"]
    assert list(prediction_columns(np.array([[1], [2]]), 2)) == ["prediction"]
    assert list(prediction_columns(np.array([[1, 2], [3, 4]]), 2)) == ["prediction_0",
                                                                       "prediction_1"]
    frame = pd.DataFrame({"label": [1, 2], "score": [0.1, 0.2]})
    assert list(prediction_columns(frame, 2)) == ["prediction_label", "prediction_score"]
    assert list(prediction_columns(pd.Series([1, 2]), 2)) == ["prediction"]
    assert list(prediction_columns({"a": [1, 2], "b": [3, 4]}, 2)) == ["prediction_a",
                                                                       "prediction_b"]
    with pytest.raises(RuntimeError):
        prediction_columns(np.array([1, 2, 3]), 2)


def test_batch_in_signature_order_without_kept_columns():
    sig = Signature.from_specs([{"name": "b", "type": "double"}, {"name": "a", "type": "long"}])
    frame = pd.DataFrame({"id": [7, 8], "a": [1, 2], "b": [0.5, 1.5]})
    batch = batch_of(frame, sig, ["id"])
    assert batch.names == ["b", "a"] and batch.matrix is not None
    assert batch.matrix.tolist() == [[0.5, 1.0], [1.5, 2.0]]
    unsigned = batch_of(frame, Signature(kind="none"), ["id"])
    assert unsigned.names == ["a", "b"]
