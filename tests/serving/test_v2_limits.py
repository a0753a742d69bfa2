"""The v2 binary extension against a hostile client: every malformed request is a 400 naming
the problem — never a 500, a hang or an allocation the body cannot back.

The real model server (``python -m serving``, the iris replica the other serving tests use) on
loopback TCP; requests are built by hand because tritonclient only sends well-formed ones.
"""

from __future__ import annotations

import json
import struct

import pytest
import requests

pytestmark = pytest.mark.timeout(120)


def infer(server, doc: dict, binary: bytes = b"", header_length: int | None = None):
    head = json.dumps(doc).encode()
    headers = {"Content-Type": "application/octet-stream"}
    if binary or header_length is not None:
        headers["Inference-Header-Content-Length"] = str(
            len(head) if header_length is None else header_length)
    return requests.post(f"http://127.0.0.1:{server.port}/v2/models/iris/infer",
                         data=head + binary, headers=headers, timeout=30)


def binary_input(shape, size, datatype="FP32") -> dict:
    return {"inputs": [{"name": "input-0", "datatype": datatype, "shape": shape,
                        "parameters": {"binary_data_size": size}}]}


ROW = struct.pack("<4f", 5.1, 3.5, 1.4, 0.2)


@pytest.mark.parametrize(("doc", "binary", "says"), [
    # numpy's product of these wraps around to 0: the empty body must not pass for them
    (binary_input([2 ** 33, 2 ** 31], 0), b"", "larger than any request"),
    (binary_input([2 ** 33, 2 ** 31], 0, "BYTES"), b"", "larger than any request"),
    (binary_input([0, 2 ** 62], 0), b"", "larger than any request"),
    (binary_input([1] * 40, 16), ROW, "at most 32 dimensions"),
    (binary_input([-1, 4], 16), ROW, "non-negative"),
    (binary_input([1, 4], 2 ** 40), ROW, "runs past"),
    (binary_input([1, 4], -16), ROW, "runs past"),
    (binary_input([1, 3], 12), ROW, "belong to no input"),
    (binary_input([1, 3], 12), ROW[:12], "4 values in signature order"),
    (binary_input([2], 5, "BYTES"), struct.pack("<I", 2 ** 31) + b"x", "runs past"),
    (binary_input([1], 2, "BYTES"), b"\x01\x00", "cut short"),
    ({**binary_input([1, 4], 16), "outputs": 5}, ROW, "'outputs' must be a list"),
    ({**binary_input([1, 4], 16), "outputs": [{"name": "predict", "parameters": [1]}]}, ROW,
     "parameters must be an object"),
])
def test_malformed_binary_requests_are_400(iris_server, doc, binary, says) -> None:
    answer = infer(iris_server, doc, binary)
    assert answer.status_code == 400, answer.text
    assert says in answer.json()["error"]


def test_header_length_that_does_not_fit_the_body_is_400(iris_server) -> None:
    doc = binary_input([1, 4], 16)
    for length in (2 ** 62, 10 ** 30, -1, 0):
        answer = infer(iris_server, doc, ROW, header_length=length)
        assert answer.status_code == 400, (length, answer.text)
        assert "Inference-Header-Content-Length" in answer.json()["error"]
    good = infer(iris_server, doc, ROW)
    assert good.status_code == 200, good.text
