"""PyTorch models in-process (issue 19): the fast path against mlflow's own pyfunc, Open
Inference Protocol tensors of FP32/FP64/INT64/INT32/FP16 signatures in and out (JSON and the
binary extension), and the plain-language reasons for torch's usual load failures.

torch runs here in the test process (the CPU wheel; there is no GPU on this machine, so the
device is the CPU — the CUDA branch of the fast path is covered only by its setting).
"""

from __future__ import annotations

import asyncio
import json
import struct
from importlib import metadata

import httpx
import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.models import infer_signature

from serving import config, flavors, loader, v2
from serving.app import ModelServer
from serving.config import Settings
from serving.errors import InputError
from serving.flavors import pytorch as torch_flavor
from serving.schema import Signature

REQUIREMENTS = [f"torch=={metadata.version('torch').split('+')[0]}"]


class Scale(torch.nn.Module):
    """Keeps the input's dtype: an int64 input answers int64, a float64 one float64."""

    def forward(self, x):
        return x * 3


def save(module, example, path, output=None, fmt="pt2"):
    """``pt2`` (a ``torch.export`` program) is mlflow's default; ``pickle`` the whole module."""
    module.eval()
    with torch.no_grad():
        out = module(torch.from_numpy(example)).numpy() if output is None else output
    mlflow.pytorch.save_model(module, str(path), signature=infer_signature(example, out),
                              input_example=example, pip_requirements=REQUIREMENTS,
                              serialization_format=fmt)
    return path


def make_app(model_dir) -> ModelServer:
    app = ModelServer(Settings(model_dir=str(model_dir), model_name="m", model_version="1"),
                      load_in_background=False)
    app._load()
    assert app.model is not None, app.load_error
    return app


def post(app: ModelServer, path: str, content: bytes, headers: dict[str, str] | None = None):
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, content=content, headers={
                "content-type": "application/json", **(headers or {})})

    return asyncio.run(go())


def infer(app, inputs, **kw):
    return post(app, "/v2/models/m/versions/1/infer", json.dumps({"inputs": inputs}).encode(),
                **kw)


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(2 * 8 * 8, 10))
    example = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    return save(net, example, tmp_path_factory.mktemp("cnn") / "model")


def test_fast_path_answers_what_pyfunc_answers(cnn_dir) -> None:
    model = loader.load(str(cnn_dir))
    assert model.info["fast_path"] == "torch" and model.info["device"] == "cpu"
    assert model.info["threads"] == torch_flavor.threads()
    x = np.random.default_rng(1).normal(size=(7, 1, 8, 8)).astype(np.float32)
    want = mlflow.pyfunc.load_model(str(cnn_dir)).predict(x)
    batch = loader.Batch(n_rows=7, tensor=x)
    got = model.predict(batch)
    assert got.dtype == want.dtype == np.float32 and np.array_equal(got, want)


def test_cnn_answers_keep_their_shape_in_both_protocols(cnn_dir) -> None:
    app = make_app(cnn_dir)
    x = np.random.default_rng(2).normal(size=(3, 1, 8, 8)).astype(np.float32)
    want = mlflow.pyfunc.load_model(str(cnn_dir)).predict(x)
    r = post(app, "/invocations", json.dumps({"inputs": x.tolist()}).encode())
    assert r.status_code == 200, r.text
    assert np.array_equal(np.array(r.json()["predictions"], dtype=np.float32), want)
    # JSON data: flat, as the protocol sends it
    r = infer(app, [{"name": "input-0", "shape": [3, 1, 8, 8], "datatype": "FP32",
                     "data": x.ravel().tolist()}])
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [3, 10] and out["datatype"] == "FP32"
    assert np.array_equal(np.array(out["data"], dtype=np.float32).reshape(3, 10), want)
    # the binary extension, in and out
    header = json.dumps({"inputs": [{"name": "input-0", "shape": [3, 1, 8, 8],
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    r = post(app, "/v2/models/m/versions/1/infer", header + x.tobytes(),
             {"inference-header-content-length": str(len(header)),
              "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    length = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:length])
    assert doc["outputs"][0]["shape"] == [3, 10]
    got = np.frombuffer(r.content[length:], dtype="<f4").reshape(3, 10)
    assert np.array_equal(got, want)


@pytest.mark.parametrize(("body", "message"), [
    ({"name": "input-0", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64},
     "input tensor: expected shape [-1, 1, 8, 8], got [1, 64]"),
    ({"name": "input-0", "shape": [1, 1, 8, 8], "datatype": "FP64", "data": [0.0] * 64},
     "input 'input-0': datatype FP64 does not convert to the model's FP32 without loss"),
    ({"name": "input-0", "shape": [1, 1, 8, 8], "datatype": "INT64", "data": [0] * 64},
     "input 'input-0': datatype INT64 does not convert to the model's FP32 without loss"),
    ({"name": "input-0", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 63},
     "input 'input-0': 63 values do not fit shape [1, 1, 8, 8]"),
    ({"name": "input-0", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": ["a"] * 64},
     "input 'input-0': datatype FP32 but the data holds text"),
    ({"name": "input-0", "shape": [1, 1, 8, 8], "datatype": "INT64", "data": [0.5] * 64},
     "input 'input-0': datatype INT64 but the data holds numbers with a fraction"),
])
def test_wrong_tensors_are_400_naming_the_problem(cnn_dir, body, message) -> None:
    r = infer(make_app(cnn_dir), [body])
    assert r.status_code == 400, r.text
    assert message in r.json()["error"], r.json()


@pytest.mark.parametrize(("dtype", "datatype", "narrower"), [
    (np.float64, "FP64", [("FP32", np.float32), ("FP16", np.float16)]),
    (np.int64, "INT64", [("INT32", np.int32)]),
    (np.int32, "INT32", [("INT16", np.int16)]),
    (np.float16, "FP16", []),
])
def test_signature_dtypes_in_and_out(tmp_path, dtype, datatype, narrower) -> None:
    x = (np.arange(12).reshape(4, 3) % 5).astype(dtype)
    app = make_app(save(Scale(), x, tmp_path / "model", fmt="pickle"))
    meta = json.loads(asyncio.run(_get(app, "/v2/models/m")))
    assert meta["inputs"] == [{"name": "input-0", "datatype": datatype, "shape": [-1, 3]}]
    for sent, sent_dtype in [(datatype, dtype), *narrower]:
        r = infer(app, [{"name": "input-0", "shape": [4, 3], "datatype": sent,
                         "data": x.astype(sent_dtype).ravel().tolist()}])
        assert r.status_code == 200, (sent, r.text)
        out = r.json()["outputs"][0]
        assert (out["shape"], out["datatype"]) == ([4, 3], datatype)
        assert np.array_equal(np.array(out["data"], dtype=dtype).reshape(4, 3), x * 3)
        raw = x.astype(sent_dtype)
        header = json.dumps({"inputs": [{"name": "input-0", "shape": [4, 3], "datatype": sent,
                                         "parameters": {"binary_data_size": raw.nbytes}}]})
        r = post(app, "/v2/models/m/versions/1/infer", header.encode() + raw.tobytes(),
                 {"inference-header-content-length": str(len(header))})
        assert r.status_code == 200, (sent, r.text)
        got = np.array(r.json()["outputs"][0]["data"], dtype=dtype).reshape(4, 3)
        assert np.array_equal(got, x * 3)
    r = post(app, "/invocations", json.dumps({"instances": x.tolist()}).encode())
    assert r.status_code == 200 and np.array_equal(np.array(r.json()["predictions"]), x * 3)


async def _get(app, path):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return (await client.get(path)).content


def test_column_signature_mlp_answers_pyfunc_frames(tmp_path) -> None:
    import pandas as pd

    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    frame = pd.DataFrame({"a": [0.5, 1.5], "b": [2.0, -1.0], "c": [0.25, 3.0]})
    with torch.no_grad():
        out = net(torch.from_numpy(frame.to_numpy(np.float32, copy=True))).numpy()
    mlflow.pytorch.save_model(net, str(tmp_path / "m"), signature=infer_signature(frame, out),
                              input_example=frame, pip_requirements=REQUIREMENTS,
                              serialization_format="pickle")  # pt2 needs a tensor signature
    model = loader.load(str(tmp_path / "m"))
    assert model.info["fast_path"] == "torch"
    app = make_app(tmp_path / "m")
    rows = [[0.1, 0.2, 0.3], [1.0, -2.0, 4.0], [7.0, 8.0, 9.0]]
    r = post(app, "/invocations",
             json.dumps({"dataframe_split": {"columns": ["a", "b", "c"], "data": rows}}).encode())
    want = mlflow.pyfunc.load_model(str(tmp_path / "m")).predict(
        pd.DataFrame(rows, columns=["a", "b", "c"]))
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [{str(k): float(v) for k, v in row.items()}
                                       for row in want.to_dict(orient="records")]


def test_device_setting() -> None:
    assert config.device_setting({}) == "auto"
    assert config.device_setting({"MODELPORT_DEVICE": "cuda:1"}) == "cuda:1"
    with pytest.raises(SystemExit, match="expected auto, cpu, cuda or cuda:N"):
        config.device_setting({"MODELPORT_DEVICE": "gpu"})
    assert torch_flavor.choose_device(torch, "auto") == "cpu"  # no GPU on this machine
    assert torch_flavor.choose_device(torch, "cuda:0") == "cuda:0"


# --- plain-language reasons on torch's real error text --------------------------------------

def _cuda_saved_error(tmp_path, monkeypatch) -> BaseException:
    """The real error of loading, on a CPU-only torch, a file whose storages were saved on a
    GPU: torch.save records each storage's device from ``location_tag``; saving on CPU with
    that tag reading 'cuda:0' writes exactly what a GPU-trained model's file holds."""
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(torch.nn.Linear(2, 1), tmp_path / "gpu.pth")
    with pytest.raises(RuntimeError) as caught:
        torch.load(tmp_path / "gpu.pth", weights_only=False)
    return caught.value


def test_explains_cuda_only_weights_and_the_fast_path_maps_them_to_the_cpu(
        tmp_path, monkeypatch) -> None:
    exc = _cuda_saved_error(tmp_path, monkeypatch)
    mlmodel = {"flavors": {"pytorch": {"pytorch_version": torch.__version__},
                           "python_function": {"loader_module": "mlflow.pytorch"}}}
    message = flavors.explain(exc, mlmodel)
    assert message and "needs a CUDA GPU and this target has none" in message
    # Saved the same way as an MLflow model: pyfunc alone fails, the fast path loads it.
    x = np.ones((2, 2), dtype=np.float32)
    net = torch.nn.Linear(2, 1)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save(net, x, tmp_path / "m", output=np.ones((2, 1), dtype=np.float32), fmt="pickle")
    with pytest.raises(RuntimeError, match="CUDA"):
        mlflow.pyfunc.load_model(str(tmp_path / "m"))
    model = loader.load(str(tmp_path / "m"))
    assert model.info["device"] == "cpu"
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert np.array_equal(model.predict(loader.Batch(n_rows=2, tensor=x)), want)


def test_explains_a_torch_version_mismatch_and_a_missing_class() -> None:
    mlmodel = {"flavors": {"pytorch": {"pytorch_version": "1.13.1"},
                           "python_function": {"loader_module": "mlflow.pytorch"}}}
    message = flavors.explain(RuntimeError("PytorchStreamReader failed reading zip archive: "
                                           "failed finding central directory"), mlmodel)
    assert message and "saved with torch 1.13.1" in message and "torch==1.13.1" in message
    missing = AttributeError("Can't get attribute 'Net' on <module '__main__' from 'train.py'>")
    message = flavors.explain(missing, mlmodel)
    assert message and "class Net was defined in __main__" in message
    assert "code_paths" in message
    assert flavors.explain(ModuleNotFoundError("No module named 'mynets'"), mlmodel) \
        .startswith("the model's code imports mynets")
    same = {"flavors": {"pytorch": {"pytorch_version": torch.__version__},
                        "python_function": {"loader_module": "mlflow.pytorch"}}}
    assert flavors.explain(ValueError("something else"), same) is None


def test_tensor_parse_without_a_signature_tensor_keeps_lists() -> None:
    """Column-signature and no-signature models keep today's parsing (lists, any datatype)."""
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64",
                                   "data": [1, 2, 3, 4]}]}).encode()
    request = v2.parse(body, None, None)
    assert request.table.data == {"x": [[1, 2], [3, 4]]}
    spec = Signature.from_specs([{"type": "tensor", "tensor-spec": {"dtype": "float32",
                                                                    "shape": [-1, 2]}}])
    request = v2.parse(body.replace(b"FP64", b"FP32"), None, None, spec.tensors)
    assert request.table.data["x"].dtype == np.float32
    with pytest.raises(InputError, match="does not convert"):
        v2.parse(body, None, None, spec.tensors)
    raw = struct.pack("<4f", 1, 2, 3, 4)
    header = json.dumps({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 16}}]}).encode()
    request = v2.parse(header + raw, len(header), None, spec.tensors)
    assert request.table.data["x"].shape == (2, 2)
