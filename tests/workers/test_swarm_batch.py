"""Batch jobs on a real single-node Docker Swarm (``workers.runtimes.swarm_batch``): a 3-chunk
replicated-job service of the offline base image, chunk i <-> exactly one successful task,
Swarm's per-slot retries, a resume of the chunk that gave up, hardening and the job's own
internal network checked on the real task containers, and nothing left after ``remove_job``.

The chunk command is a STAND-IN: ``serving/batch.py`` (the core stream's) is not on this branch
yet, so the runtime's entry module is a small script in the job's input directory that writes
the chunk's files as ``workers.runtimes.batch`` lays them out (a progress file, then the chunk
file under a temporary name renamed into place). The runtime's real entry point
(slot -> ``MODELPORT_CHUNK`` -> ``runpy``) is what runs it.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.swarm_fixtures import swarm  # noqa: F401 - fixture
from tests.workers.conftest import BASE_IMAGE, REPO_ROOT, TEST_LABEL
from workers.runtimes.batch import BatchSpec, ChunkPhase, ChunkState, chunk_output

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

INSTALLATION = "0rch7e57-aaaa-bbbb-cccc-ddddeeeeffff"
STANDIN = '''
import json, os, sys
i = int(os.environ["MODELPORT_CHUNK"])
out, inp = "/job/output", "/job/input"
print(f"stand-in chunk {i} slot {os.environ.get('MODELPORT_SLOT')}", flush=True)
net = sorted(os.listdir("/sys/class/net"))
with open("/proc/net/route") as f:
    routes = [line.split()[1] for line in f.readlines()[1:] if line.split()]
with open(f"{out}/net-{i}.json", "w") as f:
    json.dump({"interfaces": net, "routes": routes, "uid": os.getuid()}, f)
if os.path.exists(f"{inp}/fail-always-{i}"):
    sys.exit(3)
marker = f"{out}/.attempted-{i}"
if os.path.exists(f"{inp}/fail-once-{i}") and not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(4)
with open(f"{out}/progress-{i:06d}.json", "w") as f:
    json.dump({"rows_done": 10, "rows": 10}, f)
tmp = f"{out}/.chunk-{i:06d}.tmp"
with open(tmp, "w") as f:
    f.write(f"chunk {i}\\n")
os.rename(tmp, f"{out}/chunk-{i:06d}.parquet")
open(f"{out}/written-{i}-{os.environ['HOSTNAME']}", "w").close()
'''


@pytest.fixture(scope="module")
def base(docker_client: Any) -> str:
    """The offline base image (python, no model stack): built once, cached by tag."""
    subprocess.run(["bash", str(REPO_ROOT / "platform" / "images" / "build-base.sh"),
                    "--tag", BASE_IMAGE], check=True, capture_output=True, timeout=1200)
    return BASE_IMAGE


@pytest.fixture
def job_dirs(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "job"
    inp, out = root / "input", root / "output"
    (inp / "lib").mkdir(parents=True)
    out.mkdir()
    (inp / "lib" / "standin_batch.py").write_text(STANDIN)
    for p in (tmp_path, root, inp, inp / "lib"):
        p.chmod(0o755)
    (inp / "lib" / "standin_batch.py").chmod(0o644)
    out.chmod(0o777)  # uid 10001 writes there (the platform's runner owns it in production)
    return inp, out


@pytest.fixture
def runtime(swarm: Any) -> Iterator[Any]:  # noqa: F811
    from workers.runtimes.swarm_batch import SwarmBatchRuntime

    rt = SwarmBatchRuntime(swarm, extra_labels={TEST_LABEL: "1"}, installation=INSTALLATION,
                           entry_module="standin_batch", python="python3")
    rt.created_jobs = []  # type: ignore[attr-defined]
    yield rt
    for job in rt.created_jobs:  # type: ignore[attr-defined]
        rt.remove_job(job)


def wait_settled(rt: Any, job: str, chunks: set[int]) -> dict[int, ChunkState]:
    """Poll until every chunk in ``chunks`` succeeded or gave up (bounded, not timed)."""
    deadline = time.monotonic() + 240
    while True:
        states = rt.chunk_states(job)
        if all(i in states and states[i].phase in (ChunkPhase.SUCCEEDED, ChunkPhase.FAILED)
               for i in chunks):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(1)


def test_a_replicated_job_runs_each_chunk_once_retries_resumes_and_leaves_nothing(
        swarm: Any, runtime: Any, base: str, job_dirs: tuple[Path, Path]) -> None:  # noqa: F811
    import json

    from workers.runtimes.swarm_batch import job_network_name, job_service_name

    inp, out = job_dirs
    (inp / "fail-once-1").touch()
    (inp / "fail-always-2").touch()
    job = f"job-t{uuid.uuid4().hex[:6]}"
    runtime.created_jobs.append(job)
    spec = BatchSpec(job=job, image=base, model_dir=None, input_dir=str(inp),
                     output_dir=str(out), chunks=3, parallelism=2, cpu=0.5, memory_mb=256,
                     pids_limit=64, max_retries=1, env={"PYTHONPATH": "/job/input/lib"})
    assert runtime.mode == "whole_job"
    runtime.submit_job(spec, [0, 1, 2])
    runtime.submit_job(spec, [0, 1, 2])  # idempotent
    runtime.submit_job(spec, [1, 2])  # the runner's next tick: chunks still to do, all live
    services = swarm.api.services(filters={"label": f"modelport.job={job}"})
    assert [s["Spec"]["Name"] for s in services] == [job_service_name(job, [0, 1, 2],
                                                                       INSTALLATION)]
    service = services[0]["Spec"]
    assert service["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}
    assert service["TaskTemplate"]["RestartPolicy"]["Condition"] == "on-failure"
    assert service["TaskTemplate"]["RestartPolicy"]["MaxAttempts"] == 1
    assert service["Labels"]["modelport.installation"] == INSTALLATION

    states = wait_settled(runtime, job, {0, 1, 2})
    assert states[0].phase is ChunkPhase.SUCCEEDED and states[0].exit_code == 0
    assert states[1].phase is ChunkPhase.SUCCEEDED  # after one failed attempt
    assert states[2].phase is ChunkPhase.FAILED and states[2].exit_code == 3
    assert "gave up after 2 failed attempt(s)" in states[2].message
    assert "stand-in chunk 0 slot" in runtime.chunk_logs(job, 0)

    # Each chunk ran in its own slot: chunk i <-> exactly one successful task.
    tasks = swarm.api.tasks(filters={"service": services[0]["ID"]})
    complete = sorted(t.get("Slot") or 0 for t in tasks if t["Status"]["State"] == "complete")
    assert complete == [0, 1]
    assert (out / ".attempted-1").exists()

    # Hardened, on the job's own internal overlay network with no route out.
    network = swarm.api.inspect_network(job_network_name(job, INSTALLATION))
    assert network["Driver"] == "overlay" and network["Internal"] is True
    containers = swarm.containers.list(
        all=True, filters={"label": f"com.docker.swarm.service.id={services[0]['ID']}"})
    assert containers
    for container in containers:
        host = container.attrs["HostConfig"]
        assert container.attrs["Config"]["User"] == "10001:10001"
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"]
        assert host["NanoCpus"] == 5 * 10**8 and host["Memory"] == 256 * 1024 * 1024
        assert host["PidsLimit"] == 64
        mounts = {m["Target"]: m for m in host["Mounts"]}
        assert mounts["/job/input"]["ReadOnly"] is True
        assert not mounts["/job/output"].get("ReadOnly")
        assert not any("docker.sock" in (m.get("Source") or "") for m in host["Mounts"])
        assert list(container.attrs["NetworkSettings"]["Networks"]) == \
            [job_network_name(job, INSTALLATION)]
    for i in (0, 1):
        seen = json.loads((out / f"net-{i}.json").read_text())
        assert seen["interfaces"] == ["eth0", "lo"] and "00000000" not in seen["routes"]
        assert seen["uid"] == 10001

    # Resume the chunk that gave up: a new service for chunk 2 only; 0 and 1 are not rerun.
    (inp / "fail-always-2").unlink()
    runtime.submit_job(spec, [2])
    states = wait_settled(runtime, job, {2})
    assert {i: s.phase for i, s in states.items()} == {i: ChunkPhase.SUCCEEDED
                                                       for i in range(3)}
    for i in range(3):
        assert (out / chunk_output(i)).read_text() == f"chunk {i}\n"
        assert len(list(out.glob(f"written-{i}-*"))) == 1  # no chunk written twice
    assert not list(out.glob(".chunk-*"))

    # Nothing left: no service, no container, no network.
    ids = [s["ID"] for s in swarm.api.services(filters={"label": f"modelport.job={job}"})]
    assert len(ids) == 2
    runtime.remove_job(job)
    assert swarm.api.services(filters={"label": f"modelport.job={job}"}) == []
    for service_id in ids:
        assert swarm.containers.list(
            all=True, filters={"label": f"com.docker.swarm.service.id={service_id}"}) == []
    assert [n for n in swarm.api.networks(names=[job_network_name(job, INSTALLATION)])
            if n["Name"] == job_network_name(job, INSTALLATION)] == []
    assert runtime.chunk_states(job) == {}


def test_another_installations_job_is_neither_seen_nor_removed(
        swarm: Any, runtime: Any, base: str, job_dirs: tuple[Path, Path]) -> None:  # noqa: F811
    from workers.runtimes.swarm_batch import SwarmBatchRuntime

    inp, out = job_dirs
    job = f"job-t{uuid.uuid4().hex[:6]}"
    runtime.created_jobs.append(job)
    spec = BatchSpec(job=job, image=base, model_dir=None, input_dir=str(inp),
                     output_dir=str(out), chunks=1, env={"PYTHONPATH": "/job/input/lib"})
    runtime.submit_job(spec, [0])
    other = SwarmBatchRuntime(swarm, installation="another-installation")
    unscoped = SwarmBatchRuntime(swarm)
    assert other.chunk_states(job) == {} and unscoped.chunk_states(job) == {}
    other.remove_job(job)
    unscoped.remove_job(job)
    assert len(swarm.api.services(filters={"label": f"modelport.job={job}"})) == 1
    assert wait_settled(runtime, job, {0})[0].phase is ChunkPhase.SUCCEEDED


def test_the_real_scorer_in_the_serving_image_scores_each_chunk_like_the_local_model(
        swarm: Any, serving_image: str, iris_model_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    """``python -m serving.batch`` (the core stream's) in the serving image, through the
    runtime's real entry point: 3 row groups -> 3 chunk files, predictions equal the model
    loaded here, in row order."""
    import mlflow.pyfunc
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_iris

    from workers.runtimes.swarm_batch import SwarmBatchRuntime

    x, _ = load_iris(return_X_y=True, as_frame=True)
    frame = x.sample(n=300, replace=True, random_state=7).reset_index(drop=True)
    root = tmp_path / "job"
    inp, out = root / "input", root / "output"
    inp.mkdir(parents=True)
    out.mkdir()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), inp / "input.parquet",
                   row_group_size=100)
    for p in (tmp_path, root, inp):
        p.chmod(0o755)
    (inp / "input.parquet").chmod(0o644)
    out.chmod(0o777)
    runtime = SwarmBatchRuntime(swarm, extra_labels={TEST_LABEL: "1"},
                                installation=INSTALLATION)
    job = f"job-t{uuid.uuid4().hex[:6]}"
    spec = BatchSpec(job=job, image=serving_image, model_dir=str(iris_model_dir),
                     input_dir=str(inp), output_dir=str(out), chunks=3, parallelism=2,
                     cpu=1, memory_mb=768, max_retries=0)
    try:
        runtime.submit_job(spec, [0, 1, 2])
        states = wait_settled(runtime, job, {0, 1, 2})
        assert {i: s.phase for i, s in states.items()} == \
            {i: ChunkPhase.SUCCEEDED for i in range(3)}, \
            [t["Status"] for s in swarm.api.services(filters={"label": f"modelport.job={job}"})
             for t in swarm.api.tasks(filters={"service": s["ID"]})
             if t["Status"]["State"] != "complete"]
        assert "rows scored" in runtime.chunk_logs(job, 1)
        expected = mlflow.pyfunc.load_model(str(iris_model_dir)).predict(frame)
        got = [pq.read_table(out / chunk_output(i)).column("prediction").to_pylist()
               for i in range(3)]
        assert [len(g) for g in got] == [100, 100, 100]
        assert [v for part in got for v in part] == [int(v) for v in expected]
    finally:
        runtime.remove_job(job)
    assert swarm.api.services(filters={"label": f"modelport.job={job}"}) == []


def test_a_swarm_targets_runtime_hands_out_its_batch_runtime(docker_client: Any) -> None:
    """What ``jobs.runner.runtimes.batch_runtime`` calls on a swarm target (no swarm needed)."""
    from workers.runtimes.swarm import SwarmRuntime
    from workers.runtimes.swarm_batch import SwarmBatchRuntime

    replicas = SwarmRuntime(docker_client, installation=INSTALLATION,
                            extra_labels={TEST_LABEL: "1"})
    batch = replicas.batch_runtime()
    assert isinstance(batch, SwarmBatchRuntime) and batch.mode == "whole_job"
    assert batch.installation == INSTALLATION and batch.extra_labels == {TEST_LABEL: "1"}


def test_the_per_chunk_bridge_runs_one_service_per_attempt_and_removes_it(
        swarm: Any, runtime: Any, base: str, job_dirs: tuple[Path, Path]) -> None:  # noqa: F811
    """What the jobs runner does today (per chunk): start each chunk, read its state, retry a
    failed one itself with the next attempt, remove a finished chunk's service."""
    inp, out = job_dirs
    (inp / "fail-once-1").touch()
    job = f"job-t{uuid.uuid4().hex[:6]}"
    runtime.created_jobs.append(job)
    spec = BatchSpec(job=job, image=base, model_dir=None, input_dir=str(inp),
                     output_dir=str(out), chunks=2, parallelism=2, max_retries=3,
                     env={"PYTHONPATH": "/job/input/lib"})
    first = [runtime.start_chunk(spec, i, 1) for i in (0, 1)]
    assert [s.attempt for s in first] == [1, 1]
    assert runtime.start_chunk(spec, 0, 1).attempt == 1  # idempotent
    states = wait_settled(runtime, job, {0, 1})
    assert states[0].phase is ChunkPhase.SUCCEEDED
    # Swarm does not retry a bridged chunk (max_retries is the runner's): attempt 1 failed.
    assert states[1].phase is ChunkPhase.FAILED and states[1].exit_code == 4
    assert states[1].attempt == 1
    runtime.remove_chunk(job, 1)
    assert 1 not in runtime.chunk_states(job)
    assert runtime.start_chunk(spec, 1, 2).attempt == 2
    states = wait_settled(runtime, job, {1})
    assert states[1].phase is ChunkPhase.SUCCEEDED and states[1].attempt == 2
    for i in (0, 1):
        runtime.remove_chunk(job, i)
        assert len(list(out.glob(f"written-{i}-*"))) == 1
    assert runtime.chunk_states(job) == {}
    assert swarm.api.services(filters={"label": f"modelport.job={job}"}) == []
