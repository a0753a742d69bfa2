"""Cold start of a hardened serving container: `start_replica` → `/ready` answers 200.

Compares the model bind-mounted read-only at /model (the default) with the model baked into a
thin image layer, on the real Docker Engine, with a tiny iris LogisticRegression; the modes are
measured alternately so that background load hits them alike. "mount, no replay" is the default
with MODELPORT_FAST_IMPORTS=0 (none of serving/fastimport.py: skops computes its trusted types
at import, SciPy parses and renders its docstrings, skops searches each ufunc's module). "python
-c pass" is the floor: the same image and hardening running an empty interpreter (create +
start + exit). A local process (no container, LocalRuntime) is the reference.

    .venv/bin/python bench/container_cold_start.py [--runs 5] [--base-image modelport/base:bookworm]

`--compare-source DIR` also builds a serving image from another source tree (a directory with
serving/ and platform/, e.g. an older commit:
`git archive HEAD serving platform | tar -x -C DIR`) and measures it in the same rounds as
"mount, DIR"; that image is removed at the end.

Needs the base image (platform/images/build-base.sh); builds the serving image when missing.
Containers are labelled modelport.bench=1 (not modelport.test: test suites remove those) and
removed at the end.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from workers.runtimes.base import ReplicaSpec, wait_ready
from workers.runtimes.docker import DockerRuntime
from workers.runtimes.images import ImageBuilder
from workers.runtimes.local import LocalRuntime


def save_iris(path: Path, requirements: list[str]) -> None:
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=300).fit(x, y)
    mlflow.sklearn.save_model(model, str(path), input_example=x.head(2),
                              pip_requirements=requirements)
    for p in [path.parent, path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def measure(rt: DockerRuntime | LocalRuntime,
            spec: ReplicaSpec) -> tuple[float, float, float]:
    """(create+start s, → /ready s, CPU seconds the container used to get ready).

    The CPU figure (from the container's cgroup) hardly moves with machine load, unlike the
    wall-clock ones; NaN for the local process."""
    t0 = time.perf_counter()
    state = rt.start_replica(spec)
    t_started = time.perf_counter() - t0
    try:
        if not wait_ready(state.url or "", timeout=300, interval=0.02):
            replica = rt.get_replica(state.id)
            raise SystemExit(f"{state.id} not ready after 300 s ({replica.status.value}, "
                             f"{replica.message or 'no message'}): {rt.logs(state.id, 40)}")
        ready = time.perf_counter() - t0
        cpu = float("nan")
        if isinstance(rt, DockerRuntime):
            stats = rt.client.containers.get(state.id).stats(stream=False, one_shot=True)
            cpu = stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
        return t_started, ready, cpu
    finally:
        rt.remove_replica(state.id)


def container_floor(client, image: str) -> float:
    """create + start + exit of `python -c pass` in the serving image, hardened the same way."""
    from workers.runtimes.docker_spec import HARDENING

    kwargs = {k: v for k, v in HARDENING.items() if k != "restart_policy"}
    t0 = time.perf_counter()
    container = client.containers.run(image, entrypoint=["python", "-c", "pass"], detach=True,
                                      network_mode="host", labels={"modelport.bench": "1"},
                                      **kwargs)
    try:
        container.wait(timeout=120)
        return time.perf_counter() - t0
    finally:
        container.remove(force=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--base-image", default="modelport/base:bookworm")
    ap.add_argument("--compare-source", metavar="DIR",
                    help="also measure a serving image built from this source tree")
    args = ap.parse_args()

    client = docker.from_env(timeout=300)
    reqs = [f"{n}=={md.version(n)}" for n in
            ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops")]
    builder = ImageBuilder(client, args.base_image)
    t0 = time.perf_counter()
    image = builder.ensure_image(reqs, lambda line: None)
    print(f"serving image {image}: ensure_image {time.perf_counter() - t0:.1f}s")
    compare_image = None
    if args.compare_source:
        compare = ImageBuilder(client, args.base_image, repository="modelport/serving-compare",
                               source_dir=args.compare_source)
        compare_image = compare.ensure_image(reqs, lambda line: None)
        print(f"comparison image {compare_image} from {args.compare_source}")
    with tempfile.TemporaryDirectory() as tmp:
        # As `make run` runs replicas: no network, served on a socket file; and, to compare,
        # on the host network with a loopback port.
        rt = DockerRuntime(client, base_image=args.base_image, state_dir=Path(tmp) / "docker",
                           extra_labels={"modelport.bench": "1"})
        tcp = DockerRuntime(client, network="host", port_range=(21900, 21999),
                            base_image=args.base_image, state_dir=Path(tmp) / "docker-tcp",
                            extra_labels={"modelport.bench": "1"})
        model_dir = Path(tmp) / "model"
        save_iris(model_dir, reqs)
        baked = "modelport/model-bench:iris"
        t0 = time.perf_counter()
        builder.bake_model(image, model_dir, baked)
        print(f"bake thin model layer: {time.perf_counter() - t0:.2f}s")
        local = LocalRuntime(Path(tmp) / "local-state")
        no_replay = {"MODELPORT_FAST_IMPORTS": "0"}
        modes = {"mount": (rt, image, str(model_dir), {}),
                 "mount, host network": (tcp, image, str(model_dir), {}),
                 "mount, no replay": (rt, image, str(model_dir), no_replay),
                 "baked": (rt, baked, None, {}),
                 "local": (local, None, str(model_dir), {})}
        if compare_image:
            modes[f"mount, {Path(args.compare_source).name}"] = (rt, compare_image,
                                                                 str(model_dir), {})
        runs: dict[str, list[tuple[float, float, float]]] = {
            m: [] for m in [*modes, "python -c pass"]}
        try:
            for i in range(args.runs + 1):
                for mode, (runtime, img, mdir, env) in modes.items():
                    result = measure(runtime, ReplicaSpec("bench", 1, 0, image=img,
                                                          model_dir=mdir, env=env))
                    if i:  # the first round warms the page cache
                        runs[mode].append(result)
                floor = container_floor(client, image)
                if i:
                    runs["python -c pass"].append((floor, floor, float("nan")))
        finally:
            client.images.remove(baked, force=True)
            if compare_image:
                client.images.remove(compare_image, force=True)
        rows = []
        for mode, results in runs.items():
            ready = [r[1] for r in results]
            rows.append((mode, statistics.median(r[0] for r in results),
                         statistics.median(ready), min(ready), max(ready),
                         statistics.median(r[2] for r in results)))
    print(f"\n{'model':<16} {'create+start s':>14} {'→ /ready median s':>18} {'min':>6} "
          f"{'max':>6} {'CPU s to ready':>15}   (python -c pass: → exit)")
    for mode, started, med, lo, hi, cpu in rows:
        print(f"{mode:<16} {started:>14.2f} {med:>18.2f} {lo:>6.2f} {hi:>6.2f} {cpu:>15.2f}")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
