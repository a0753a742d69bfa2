"""Benchmark: batch scoring of 1,000,000 rows — the platform's job against MLflow's own batch CLI
and a plain in-process ``pyfunc.load_model(...).predict`` loop, side by side.

    .venv/bin/python bench/batch.py                    # 1 M rows, both models, every runner
    .venv/bin/python bench/batch.py --rows 200000      # quicker
    .venv/bin/python bench/batch.py --runners loop,cli # the anchors only (no platform)

The two models of bench/serving.py (logistic regression on iris, 4 columns; a 100-tree random
forest on breast cancer, 30 columns), saved with ``mlflow.sklearn``. One CSV file of ``--rows``
rows per model (the dataset's rows repeated) is the input of every runner:

* ``loop``: a fresh ``python`` process that loads the model with ``mlflow.pyfunc.load_model``,
  reads the file in ``--loop-chunk`` row pieces with pandas, predicts each and writes the
  predictions to a Parquet file — what a team's cron script does. Timed from process start to
  exit (imports included, like the others); it also prints its own predict-only time.
* ``cli``: ``mlflow models predict -m <dir> -i <file> -t csv -o <out> --env-manager local``.
* ``job1``, ``job2``: the platform's batch job at parallelism 1 and 2, through the real API
  (``POST /api/v1/jobs/`` multipart upload of the same file), timed from the POST to the job's
  ``succeeded`` (its output is then in artifact storage), with the job's own ``rows_per_s``. The
  platform runs as the Procfile does (edge, web, workers) on the real Docker Engine, with
  ``DATABASE_URL``/``REDIS_URL`` from the environment as bench/gateway.py does; needs the
  ``jobs`` API (the core stream's runner): without it these cells print "not run".

CPU seconds: the runner's process tree (``loop``, ``cli``: rusage of the finished child); for a
job, the platform's processes (web, workers: /proc) plus every chunk container's cgroup, read
while it runs. Every runner gets ``OMP/OPENBLAS/MKL_NUM_THREADS=1`` (a 1-CPU container) and
``--cpu`` CPUs per chunk container. The overhead line is the job at parallelism 1 against the
loop, in wall time (goal: under 20 %). Load average before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
VENV_BIN = Path(sys.executable).parent
RUNNERS = ("loop", "cli", "job1", "job2")
EXTRA = ("stages",)  # the platform's steps one by one, in process (see ``run_stages``)
THREADS = {v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}

LOOP = textwrap.dedent("""
    import sys, time
    started = time.perf_counter()
    import mlflow.pyfunc, pandas as pd, pyarrow as pa, pyarrow.parquet as pq
    model_dir, path, out, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    model = mlflow.pyfunc.load_model(model_dir)
    predicting, rows, writer = 0.0, 0, None
    for frame in pd.read_csv(path, chunksize=chunk):
        t = time.perf_counter()
        predictions = model.predict(frame)
        predicting += time.perf_counter() - t
        table = pa.table({"prediction": pd.Series(predictions).to_numpy()})
        writer = writer or pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
        rows += len(frame)
    writer.close()
    print(rows, predicting, time.perf_counter() - started)
""")


@dataclass
class Cell:
    runner: str
    model: str
    rows: int
    wall_s: float | None
    cpu_s: float | None
    own_rows_per_s: float | None = None  # the loop's predict-only rate, the job's own rate
    note: str = ""

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.wall_s if self.wall_s else None


# --- models and data ----------------------------------------------------------------------
def train(root: Path, requirements: list[str]) -> dict[str, tuple[Path, object]]:
    """name → (MLflow model dir, the dataset's features as a frame)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_breast_cancer, load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    out: dict[str, tuple[Path, object]] = {}
    for name, load, make in (
            ("iris LR", load_iris, lambda: LogisticRegression(max_iter=1000)),
            ("RF 100 trees", load_breast_cancer,
             lambda: RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1))):
        x, y = load(return_X_y=True, as_frame=True)
        x.columns = [c.replace(" ", "_") for c in x.columns]
        model = make().fit(x, y)
        path = root / name.split()[0].lower()
        mlflow.sklearn.save_model(
            model, str(path), signature=infer_signature(x, model.predict(x)),
            pip_requirements=requirements,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
        for p in [path, *path.rglob("*")]:  # the container's uid reads it
            p.chmod(0o755 if p.is_dir() else 0o644)
        out[name] = (path, x)
    return out


def write_input(frame, rows: int, path: Path) -> None:
    """``rows`` rows of ``frame`` repeated, as CSV."""
    import pandas as pd

    reps = -(-rows // len(frame))
    pd.concat([frame] * reps, ignore_index=True).iloc[:rows].to_csv(path, index=False)


# --- the anchors --------------------------------------------------------------------------
def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall s, CPU s of the child's tree, stdout) of a command run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, **THREADS, **(env or {}),
                               "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{cmd[:3]} failed: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def run_loop(name: str, model_dir: Path, data: Path, rows: int, tmp: Path, chunk: int) -> Cell:
    wall, cpu, out = run_child([sys.executable, "-c", LOOP, str(model_dir), str(data),
                                str(tmp / "loop.parquet"), str(chunk)])
    done, predicting, _ = out.split()
    assert int(done) == rows, (done, rows)
    return Cell("loop", name, rows, wall, cpu, rows / float(predicting))


def run_cli(name: str, model_dir: Path, data: Path, rows: int, tmp: Path) -> Cell:
    output = tmp / "cli.json"
    wall, cpu, _ = run_child([str(VENV_BIN / "mlflow"), "models", "predict", "-m",
                              str(model_dir), "-i", str(data), "-t", "csv", "-o", str(output),
                              "--env-manager", "local"])
    return Cell("cli", name, rows, wall, cpu)


# --- the platform's steps, one by one (no Docker, no database) -----------------------------
def run_stages(name: str, model_dir: Path, data: Path, rows: int, tmp: Path,
               chunk_rows: list[int]) -> list[Cell]:
    """Where a job's time goes, without the runner: the web's read-and-stage of the same CSV
    (``jobs.datasets.read_input`` + ``stage``, in this process), the chunks scored one after
    the other by ``python -m serving.batch`` — what each chunk container runs — as local
    processes, for each chunk size, and the output join (the chunk files read in order and
    written as one Parquet file). A container adds its start to each chunk (README,
    "Containers": 0.16 s for ``python -c pass`` in the same hardened container)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from jobs import datasets

    cells = []
    signature = yaml.safe_load((model_dir / "MLmodel").read_text()).get("signature") or {}
    t, cpu = time.perf_counter(), time.process_time()
    with data.open("rb") as f:
        table = datasets.read_input(f, data.name, signature=signature, keep=[]).table
    read_s, read_cpu = time.perf_counter() - t, time.process_time() - cpu
    cells.append(Cell("read", name, rows, read_s, read_cpu))
    for size in chunk_rows:
        job_id = 900_000 + size
        t, cpu = time.perf_counter(), time.process_time()
        staged = datasets.stage(table, job_id, size)
        cells.append(Cell("stage", name, rows, time.perf_counter() - t,
                          time.process_time() - cpu, note=f"chunks of {size:,}"))
        out = staged.parent.parent / "output"
        chunks = pq.ParquetFile(staged).num_row_groups
        wall = cpu_s = 0.0
        for index in range(chunks):
            env = {"MODELPORT_CHUNK": str(index), "MODELPORT_BATCH_INPUT": str(staged),
                   "MODELPORT_BATCH_OUTPUT": str(out), "MODELPORT_MODEL_DIR": str(model_dir),
                   "PYTHONPATH": str(REPO_ROOT)}
            w, c, _ = run_child([sys.executable, "-m", "serving.batch"], env)
            wall, cpu_s = wall + w, cpu_s + c
        cells.append(Cell("chunks", name, rows, wall, cpu_s,
                          note=f"{chunks} chunk(s) of {size:,}, one after the other"))
        t, cpu = time.perf_counter(), time.process_time()
        joined = pa.concat_tables([pq.read_table(out / f"chunk-{i:06d}.parquet")
                                   for i in range(chunks)])
        assert joined.num_rows == rows, (joined.num_rows, rows)
        pq.write_table(joined, tmp / "joined.parquet")
        cells.append(Cell("join", name, rows, time.perf_counter() - t,
                          time.process_time() - cpu, note=f"{chunks} file(s)"))
        datasets.remove_work_dir(job_id)
    return cells


def stages_settings(tmp: Path) -> None:
    """The few settings ``jobs.datasets`` reads, without a database."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(MODELPORT_DATA_DIR=tmp / "data", MODELPORT_JOB_MAX_INPUT_MB=4096,
                           MODELPORT_REFERENCE_MAX_COLUMNS=1000)


# --- the platform ---------------------------------------------------------------------------
def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def jobs_api_present() -> bool:
    """Whether this checkout has the core stream's jobs API (``/api/v1/jobs/``)."""
    return (REPO_ROOT / "jobs" / "api.py").exists() or (REPO_ROOT / "jobs" / "api").is_dir()


class Platform:
    """The platform as the Procfile runs it (every process but the embedded broker, MLflow and
    the demo; beat included: it ticks running jobs), seeded through Django with a team, a token
    and the two models' versions."""

    SKIP = {"redis", "mlflow", "demo"}

    def __init__(self, tmp: Path) -> None:
        self.gw = _load("bench_gateway", "gateway.py")
        self.tmp, self.procs, self.cleanup = tmp, [], []
        data_dir = tmp / "data"
        data_dir.mkdir()
        port = self.gw.bs.free_port()
        self.env = {**os.environ, **THREADS, "MODELPORT_DATA_DIR": str(data_dir),
                    "MODELPORT_WEB_PORT": str(port), "DJANGO_SETTINGS_MODULE":
                    "config.settings.dev", "DJANGO_DEBUG": "0", "MODELPORT_RUNTIME": "docker",
                    "MODELPORT_BASE_URL": f"http://127.0.0.1:{port}",
                    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.base = f"http://127.0.0.1:{port}"
        self.gw.setup_django(data_dir)
        (data_dir / "run").mkdir()

    def seed(self, models: dict[str, tuple[Path, object]]) -> dict[str, str]:
        """Register each model dir as version 1 of a model; name → registered model name."""
        import yaml
        from django.contrib.auth import get_user_model

        from registry import storage
        from registry.models import ModelVersion, RegisteredModel, VersionStatus
        from registry.sandbox import platform_requirements
        from teams import services as team_services
        from teams.models import Membership, Team
        from teams.roles import Role

        suffix = uuid.uuid4().hex[:6]
        team = Team.objects.create(slug=f"bench-batch-{suffix}", name="Batch benchmark")
        user = get_user_model().objects.create_user(f"bench-batch-{suffix}", password=None)
        Membership.objects.create(team=team, user=user, role=Role.ENGINEER)
        _, self.secret = team_services.create_token(actor=user, name="bench")
        self.team = team.slug
        names = {}
        for name, (path, _) in models.items():
            registered = RegisteredModel.objects.create(
                name=f"bench-batch-{path.name}-{suffix}", team=team, created_by=user)
            stored = storage.store_model_dir(path)
            mlmodel = yaml.safe_load((path / "MLmodel").read_text())
            ModelVersion.objects.create(
                # As validation records it (registry.mlmodel): the JSON parts parsed.
                signature={k: json.loads(v) for k, v in mlmodel["signature"].items()
                           if isinstance(v, str)},
                model=registered, version=1, status=VersionStatus.READY, source_format="mlflow",
                flavor="sklearn", requirements=platform_requirements(),
                artifact_name=stored.name, artifact_sha256=stored.sha256,
                artifact_size=stored.size)
            names[name] = registered.name
        return names

    def start(self) -> None:
        for line in (REPO_ROOT / "Procfile").read_text().splitlines():
            key = line.partition(":")[0].strip()
            if key and key not in self.SKIP:
                proc = self.gw.bs.Proc(self.gw.procfile_command(key, self.env), self.env)
                proc.name = key
                self.procs.append(proc)
        next(p for p in self.procs if p.name == "edge").wait_200(f"{self.base}/healthz", 120)
        self.api = self.gw.Api(self.base, self.secret)

    def cpu(self) -> float:
        return sum(self.gw.cpu_seconds(pid) for p in self.procs
                   for pid in self.gw._tree(p.popen.pid))

    def run_job(self, name: str, model: str, data: Path, rows: int, parallelism: int,
                cpu: float, chunk_rows: int | None = None) -> Cell:
        import requests

        containers: dict[str, float] = {}
        ran: dict[str, float] = {}  # container id → its run (Docker's started → finished)
        cpu_before = self.cpu()
        started = time.perf_counter()
        with data.open("rb") as f:
            response = self.api.session.post(
                f"{self.base}/api/v1/jobs/", timeout=600, files={"input": (data.name, f)},
                data={"team": self.team, "model": model, "version": "1",
                      "output_format": "parquet", "parallelism": str(parallelism),
                      "resources": json.dumps({"cpu": cpu, "memory_mb": 2048}),
                      **({"chunk_rows": str(chunk_rows)} if chunk_rows else {})})
        if response.status_code != 202:
            raise RuntimeError(f"POST /jobs/: {response.status_code} {response.text[:2000]}")
        job = response.json()
        self.cleanup.append(lambda j=job["id"]: self.api.session.post(
            f"{self.base}/api/v1/jobs/{j}/cancel/", timeout=30))
        while True:
            job = self.api.call("GET", f"/jobs/{job['id']}/")
            _sample_containers(f"job-{job['id']}", containers, ran)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            if time.perf_counter() - started > 3600:
                raise RuntimeError(f"job {job['id']} not done after an hour")
            time.sleep(0.2)
        wall = time.perf_counter() - started
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('status_message')}")
        head = requests.head(f"{self.base}/api/v1/jobs/{job['id']}/output/", timeout=60,
                             headers={"Authorization": f"Bearer {self.secret}"})
        progress = job.get("progress") or {}
        note = (f"{job.get('chunks_total', '?')} chunk(s); containers ran "
                f"{sum(ran.values()):.1f} s in all")
        if head.status_code != 200:
            note += f", output HEAD {head.status_code}"
        return Cell(f"job{parallelism}", name, rows, wall,
                    self.cpu() - cpu_before + sum(containers.values()),
                    progress.get("rows_per_s"), note)

    def stop(self) -> None:
        for step in self.cleanup:
            try:
                step()
            except Exception as exc:  # report and go on cleaning up
                print(f"cleanup: {exc}", file=sys.stderr)
        for p in self.procs:
            p.stop()


def _sample_containers(job: str, seen: dict[str, float], ran: dict[str, float]) -> None:
    """Each of the job's chunk containers' CPU seconds so far (cgroup v1 or v2), kept at the
    last reading: a container's cgroup is gone once it is removed; and, once it exited, how
    long it ran by Docker's own clock (the rest of a chunk's time is the runner's)."""
    import docker

    try:
        listed = docker.from_env().containers.list(all=True, filters={"label": "modelport.job"})
    except Exception:  # the engine busy: the next poll reads again
        return
    for container in listed:
        if container.labels.get("modelport.job") != job:
            continue
        state = container.attrs.get("State") or {}
        if state.get("Status") == "exited":
            ran[container.id] = _docker_seconds(state.get("StartedAt"), state.get("FinishedAt"))
        for path, key in ((Path("/sys/fs/cgroup/system.slice")
                           / f"docker-{container.id}.scope" / "cpu.stat", "usage_usec"),
                          (Path("/sys/fs/cgroup/cpuacct/docker") / container.id
                           / "cpuacct.usage", "")):
            try:
                text = path.read_text()
            except OSError:
                continue
            if key:
                words = text.split()
                seen[container.id] = int(words[words.index(key) + 1]) / 1e6
            else:
                seen[container.id] = int(text) / 1e9
            break


def _docker_seconds(started: str | None, finished: str | None) -> float:
    from datetime import datetime

    def parse(text: str) -> datetime:  # "2026-12-07T02:02:12.123456789Z": to microseconds
        head, _, frac = text.rstrip("Z").partition(".")
        return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}")

    try:
        return max(0.0, (parse(finished or "") - parse(started or "")).total_seconds())
    except ValueError:
        return 0.0


# --- report ---------------------------------------------------------------------------------
def fmt(value: float | None, spec: str) -> str:
    width = int(re.match(r"\d*", spec).group() or 0)
    return "—".rjust(width) if value is None else format(value, spec)


def report(cells: list[Cell], rows: int, load: tuple[float, float]) -> None:
    print(f"\nBatch scoring, {rows:,} rows (CSV in), load average {load[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs")
    print(f"{'model':14} {'runner':34} {'wall s':>8} {'rows/s':>9} {'CPU s':>7} "
          f"{'own rows/s':>10}  note")
    label = {"loop": "pyfunc.load_model().predict loop", "cli": "mlflow models predict",
             "job1": "Modelport job, parallelism 1", "job2": "Modelport job, parallelism 2",
             "read": "  step: read + check the CSV (web)", "stage": "  step: stage as Parquet",
             "chunks": "  step: serving.batch per chunk", "join": "  step: join the outputs"}
    for c in cells:
        print(f"{c.model:14} {label[c.runner]:34} {fmt(c.wall_s, '8.1f')} "
              f"{fmt(c.rows_per_s, '9,.0f')} {fmt(c.cpu_s, '7.1f')} "
              f"{fmt(c.own_rows_per_s, '10,.0f')}  {c.note}")
    for model in dict.fromkeys(c.model for c in cells):
        by = {c.runner: c for c in cells if c.model == model}
        loop, job = by.get("loop"), by.get("job1")
        if loop and job and loop.wall_s and job.wall_s:
            over = 100 * (job.wall_s / loop.wall_s - 1)
            print(f"{model}: the job at parallelism 1 takes {over:+.0f} % of the loop's wall "
                  "time (goal: under +20 %)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runners", default=",".join(RUNNERS),
                    help=f"comma-separated among {', '.join(RUNNERS + EXTRA)}")
    ap.add_argument("--chunk-rows", default="50000,1000000",
                    help="chunk sizes the 'stages' runner tries (50000: the default setting)")
    ap.add_argument("--models", default="iris,RF", help="names containing these (iris, RF)")
    ap.add_argument("--loop-chunk", type=int, default=100_000, help="the loop's rows per read")
    ap.add_argument("--cpu", type=float, default=1.0, help="CPUs per chunk container (1)")
    ap.add_argument("--job-chunk-rows",
                    help="the jobs' chunk_rows: a number, or 'slot' for one chunk per "
                         "container (rows / parallelism); default: the platform's (at most "
                         "MODELPORT_JOB_CHUNK_ROWS per chunk)")
    ap.add_argument("--json", help="also write the cells here")
    args = ap.parse_args()
    runners = [r for r in args.runners.split(",") if r]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = os.getloadavg()[:2]
    tmp = Path(tempfile.mkdtemp(prefix="modelport-bench-batch-"))
    platform: Platform | None = None
    cells: list[Cell] = []
    try:
        unknown = set(runners) - set(RUNNERS + EXTRA)
        if unknown:
            ap.error(f"unknown runners: {', '.join(sorted(unknown))}")
        wants_jobs = any(r.startswith("job") for r in runners)
        if wants_jobs and jobs_api_present():
            platform = Platform(tmp)
            from registry.sandbox import platform_requirements
            requirements = platform_requirements()
        else:
            requirements = ["scikit-learn", "numpy"]
        models = {k: v for k, v in train(tmp, requirements).items()
                  if any(m in k for m in args.models.split(","))}
        if platform is not None:
            names = platform.seed(models)
            platform.start()
        for name, (path, frame) in models.items():
            data = tmp / f"{path.name}-{args.rows}.csv"
            write_input(frame, args.rows, data)
            print(f"{name}: {data.stat().st_size / 1e6:.0f} MB CSV", flush=True)
            for runner in runners:
                print(f"  {runner} ...", flush=True)
                if runner == "loop":
                    cells.append(run_loop(name, path, data, args.rows, tmp, args.loop_chunk))
                elif runner == "cli":
                    cells.append(run_cli(name, path, data, args.rows, tmp))
                elif runner == "stages":
                    if platform is None:
                        stages_settings(tmp)
                    sizes = [int(v) for v in args.chunk_rows.split(",")]
                    cells.extend(run_stages(name, path, data, args.rows, tmp, sizes))
                elif platform is None:
                    cells.append(Cell(runner, name, args.rows, None, None,
                                      note="not run: no jobs API in this checkout"))
                else:
                    parallelism = int(runner[3:])
                    chunk = (-(-args.rows // parallelism) if args.job_chunk_rows == "slot"
                             else int(args.job_chunk_rows) if args.job_chunk_rows else None)
                    cells.append(platform.run_job(name, names[name], data, args.rows,
                                                  parallelism, args.cpu, chunk))
                print(f"    {cells[-1]}", flush=True)
            data.unlink()
        report(cells, args.rows, load)
        if args.json:
            Path(args.json).write_text(json.dumps([c.__dict__ for c in cells], indent=1))
        return 0
    finally:
        if platform is not None:
            platform.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
