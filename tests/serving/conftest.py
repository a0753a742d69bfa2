"""Fixtures for the model server tests: tiny trained models, a log receiver, live servers.

No Django here: the server package must not need it, and these tests must run whether or not
``DJANGO_SETTINGS_MODULE`` is set.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
IRIS_COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
INGEST_TOKEN = "test-ingest-token"

SLOW_PYFUNC_SOURCE = textwrap.dedent(
    """
    import time

    import mlflow.pyfunc
    from mlflow.models import set_model


    class SlowEcho(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            time.sleep(2.0)  # makes the /ready-before-load window easy to observe

        def predict(self, context, model_input, params=None):
            if (model_input["x"] < 0).any():
                raise ValueError("x must be non-negative")
            return model_input["x"] * 2.0


    set_model(SlowEcho())
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- models --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Train and save the tiny models once per session (MLflow's own save_model)."""
    import mlflow.pyfunc
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    root = tmp_path_factory.mktemp("models")
    # Explicit requirements skip MLflow's requirement inference (a subprocess per save).
    reqs = {"pip_requirements": ["scikit-learn", "numpy"]}
    dirs: dict[str, Path] = {}

    iris = load_iris()
    x_iris = pd.DataFrame(iris.data, columns=IRIS_COLUMNS)
    clf = LogisticRegression(max_iter=500).fit(x_iris, iris.target)
    dirs["iris"] = root / "iris"
    mlflow.sklearn.save_model(
        clf,
        dirs["iris"],
        signature=infer_signature(x_iris, clf.predict(x_iris)),
        input_example=x_iris.head(3),
        **reqs,
    )

    x_dia, y_dia = load_diabetes(return_X_y=True)
    x_dia = x_dia.astype(np.float32)
    reg = LinearRegression().fit(x_dia, y_dia)
    dirs["regressor"] = root / "regressor"
    mlflow.sklearn.save_model(
        reg,
        dirs["regressor"],
        signature=infer_signature(x_dia, reg.predict(x_dia)),
        serialization_format="cloudpickle",
        **reqs,
    )

    mixed = pd.DataFrame(
        {
            "color": ["red", "green", "blue", "red", "green", "blue"] * 5,
            "size": np.arange(30, dtype=np.int64),
            "fragile": [True, False] * 15,
        }
    )
    target = (mixed["size"] % 2).to_numpy()
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("onehot", OneHotEncoder(handle_unknown="ignore"), ["color"])],
                    remainder="passthrough",
                ),
            ),
            ("clf", LogisticRegression(max_iter=500)),
        ]
    ).fit(mixed, target)
    dirs["mixed"] = root / "mixed"
    mlflow.sklearn.save_model(
        pipe,
        dirs["mixed"],
        signature=infer_signature(mixed, pipe.predict(mixed)),
        serialization_format="cloudpickle",
        **reqs,
    )

    dirs["nosig"] = root / "nosig"
    mlflow.sklearn.save_model(clf, dirs["nosig"], serialization_format="pickle", **reqs)

    code = root / "slow_echo.py"
    code.write_text(SLOW_PYFUNC_SOURCE)
    dirs["slow"] = root / "slow"
    sig_input = pd.DataFrame({"x": [1.0, 2.0]})
    mlflow.pyfunc.save_model(
        dirs["slow"],
        python_model=str(code),
        signature=infer_signature(sig_input, sig_input["x"] * 2.0),
        pip_requirements=["mlflow"],
    )
    return dirs


# --- a tiny ingest endpoint ----------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    batches: list[dict] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def records(self) -> list[dict]:
        with self.lock:
            return [r for b in self.batches for r in b["records"]]

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.records()):
                return True
            time.sleep(0.05)
        return False


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            doc = json.loads(self.rfile.read(length))
            rec = state["r"]
            with rec.lock:
                rec.batches.append(doc)
                rec.auth_headers.append(self.headers.get("Authorization"))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["r"] = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/api/v1/ingest")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["r"]
    server.shutdown()
    server.server_close()


# --- live servers --------------------------------------------------------------------------


@dataclass
class LiveServer:
    name: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} server not ready:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(
    name: str, model_dir: Path, log_dir: Path, extra_env: dict[str, str] | None = None,
    workers: int = 1, tcp: bool = True,
) -> LiveServer:
    """``python -m serving``; with ``tcp=False`` no TCP listener (a unix socket in
    ``extra_env``), the port it would have had stays free."""
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MODELPORT_", "DJANGO_"))
    }
    env.update(
        {
            "PYTHONPATH": str(REPO_ROOT),
            "MODELPORT_MODEL_VERSION": "7",
            "MODELPORT_DEPLOYMENT": "dep-1",
            "MODELPORT_REVISION": "3",
            "MODELPORT_REPLICA": f"{name}-0",
        }
    )
    env.update(extra_env or {})
    log_path = log_dir / f"{name}.log"
    cmd = [
        sys.executable, "-m", "serving", "--model-dir", str(model_dir),
        *(["--host", "127.0.0.1", "--port", str(port)] if tcp else []),
        "--workers", str(workers), "--name", name, "--log-level", "info",
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return LiveServer(name, port, proc, log_path, time.monotonic())


@pytest.fixture(scope="session")
def servers(
    model_dirs: dict[str, Path], receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    """Start every server at once (they load in parallel); tests wait for the one they use."""
    logs = tmp_path_factory.mktemp("server-logs")
    dead_port = free_port()  # nothing listens here: shipping always fails
    started = {
        "iris": start_server(
            "iris", model_dirs["iris"], logs,
            {
                "MODELPORT_INGEST_URL": receiver.url,
                "MODELPORT_INGEST_TOKEN": INGEST_TOKEN,
                "MODELPORT_SHIP_INTERVAL_S": "0.2",
                "MODELPORT_MAX_BODY_BYTES": "65536",
            },
        ),
        "regressor": start_server(
            "regressor", model_dirs["regressor"], logs,
            {
                "MODELPORT_INGEST_URL": f"http://127.0.0.1:{dead_port}/ingest",
                "MODELPORT_LOG_BUFFER_SIZE": "5",
                "MODELPORT_SHIP_INTERVAL_S": "0.2",
            },
        ),
        "slow": start_server(
            "slow", model_dirs["slow"], logs,
            {
                "MODELPORT_INGEST_URL": receiver.url,
                "MODELPORT_INGEST_TOKEN": INGEST_TOKEN,
                "MODELPORT_SHIP_INTERVAL_S": "60",
            },
        ),
    }
    yield started
    for server in started.values():
        server.stop()


def _ready(servers: dict[str, LiveServer], name: str) -> LiveServer:
    server = servers[name]
    server.wait_ready()
    return server


@pytest.fixture(scope="session")
def iris_server(servers: dict[str, LiveServer]) -> LiveServer:
    return _ready(servers, "iris")


@pytest.fixture(scope="session")
def regressor_server(servers: dict[str, LiveServer]) -> LiveServer:
    return _ready(servers, "regressor")
