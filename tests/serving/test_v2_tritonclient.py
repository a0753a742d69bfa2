"""NVIDIA's ``tritonclient`` (HTTP) against the model server run directly.

The model server is the standalone ``python -m serving`` process the other serving tests use,
on loopback TCP (tritonclient needs a TCP URL; a deployed replica listens only on its unix
socket file, and is called through the gateway in tests/deployments/test_gateway_v2.py).
Nothing is mocked: tritonclient's default binary tensor extension, its JSON mode, its readiness
and metadata calls, and the errors it turns into ``InferenceServerException``.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]],
                dtype=np.float32)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def client(iris_server):
    c = triton.InferenceServerClient(url=f"127.0.0.1:{iris_server.port}")
    yield c
    c.close()


def one_tensor(binary: bool, rows: np.ndarray = ROWS, datatype: str = "FP32"):
    tensor = triton.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def test_binary_infer_by_default_answers_binary_outputs(client) -> None:
    result = client.infer("iris", [one_tensor(binary=True)])
    assert result.as_numpy("predict").tolist() == [0, 2, 1]
    assert result.get_response()["model_version"] == "7"
    assert result.get_output("predict")["parameters"]["binary_data_size"] == 3 * 8


def test_json_infer_with_json_outputs(client) -> None:
    result = client.infer("iris", [one_tensor(binary=False)],
                          outputs=[triton.InferRequestedOutput("predict", binary_data=False)],
                          request_id="req-1")
    doc = result.get_response()
    assert doc["id"] == "req-1"
    assert doc["outputs"] == [{"name": "predict", "shape": [3], "datatype": "INT64",
                               "data": [0, 2, 1]}]


def test_binary_named_columns_of_every_numeric_width(client) -> None:
    """One [n] input per signature column, each in another datatype tritonclient sends."""
    kinds = [("FP64", np.float64), ("FP32", np.float32), ("FP16", np.float16),
             ("FP64", np.float64)]
    inputs = []
    for name, (datatype, dtype), column in zip(IRIS_COLUMNS, kinds, ROWS.T, strict=True):
        tensor = triton.InferInput(name, [len(column)], datatype)
        tensor.set_data_from_numpy(column.astype(dtype))
        inputs.append(tensor)
    assert client.infer("iris", inputs).as_numpy("predict").tolist() == [0, 2, 1]


def test_json_and_binary_inputs_mixed_in_one_request(client) -> None:
    inputs = []
    for i, (name, column) in enumerate(zip(IRIS_COLUMNS, ROWS.T, strict=True)):
        tensor = triton.InferInput(name, [len(column)], "FP32")
        tensor.set_data_from_numpy(column, binary_data=i % 2 == 0)
        inputs.append(tensor)
    assert client.infer("iris", inputs).as_numpy("predict").tolist() == [0, 2, 1]


def test_binary_integer_bool_and_bytes_inputs_decode(client) -> None:
    """INT*/UINT*/BOOL/BYTES: integers are valid for the double columns; a BYTES column is
    refused by the signature check with a message tritonclient shows."""
    for datatype, dtype in [("INT8", np.int8), ("INT16", np.int16), ("INT32", np.int32),
                            ("INT64", np.int64), ("UINT8", np.uint8), ("UINT16", np.uint16),
                            ("UINT32", np.uint32), ("UINT64", np.uint64)]:
        rows = np.array([[5, 3, 1, 0], [7, 3, 5, 2]], dtype=dtype)
        result = client.infer("iris", [one_tensor(True, rows, datatype)])
        assert result.as_numpy("predict").shape == (2,), datatype
    text = triton.InferInput("sepal_length", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"wide"], dtype=object))
    flags = triton.InferInput("sepal_width", [1], "BOOL")
    flags.set_data_from_numpy(np.array([True]))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [text, flags])
    assert caught.value.status() == "400"
    assert "sepal_length" in caught.value.message()


def test_readiness_metadata_and_server_calls(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "7")
    meta = client.get_model_metadata("iris")
    assert [i["name"] for i in meta["inputs"]] == IRIS_COLUMNS
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    assert meta["versions"] == ["7"]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_unknown_version_or_model_is_404_everywhere(client) -> None:
    assert not client.is_model_ready("iris", "99")
    assert not client.is_model_ready("nope")
    for call in (lambda: client.get_model_metadata("iris", "99"),
                 lambda: client.infer("iris", [one_tensor(True)], model_version="99"),
                 lambda: client.infer("nope", [one_tensor(True)])):
        with pytest.raises(InferenceServerException) as caught:
            call()
        assert caught.value.status() == "404"
        assert "decoding the response" not in caught.value.message()
    with pytest.raises(InferenceServerException, match="no version '99'"):
        client.get_model_metadata("iris", "99")


def test_bad_input_is_a_readable_400(client) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("iris", [one_tensor(True, ROWS[:, :3])])
    assert caught.value.status() == "400"
    assert "4 values in signature order" in caught.value.message()
    with pytest.raises(InferenceServerException, match="unknown output 'proba'"):
        client.infer("iris", [one_tensor(True)],
                     outputs=[triton.InferRequestedOutput("proba")])


def test_binary_requests_are_logged_with_shape_and_values(client, receiver) -> None:
    """The prediction log keeps the decoded tensor (shape and values), never raw bytes."""
    client.infer("iris", [one_tensor(True)], headers={"X-Request-ID": "binary-logged"})
    assert receiver.wait_for(lambda rs: any(r["request_id"] == "binary-logged" for r in rs))
    record = next(r for r in receiver.records() if r["request_id"] == "binary-logged")
    (tensor,) = record["inputs"]
    assert tensor["shape"] == [3, 4] and tensor["datatype"] == "FP32"
    assert np.allclose(tensor["data"], ROWS.ravel())
