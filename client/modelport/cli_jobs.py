"""``modelport job …``: run a batch scoring job and follow it, list, status, logs, cancel,
retry, download the output, and ``modelport job schedule …``. Exit codes as ``modelport``'s
(10: the job failed or was cancelled)."""

from __future__ import annotations

import argparse
from typing import Any

from .client import Client
from .output import Output, bar

JOB_COLUMNS = ["id", "team", "model", "version", "status", "rows", "trigger", "created_at"]
SCHEDULE_COLUMNS = ["id", "team", "name", "model", "version", "alias", "cron", "enabled",
                    "next_run_at", "input_uri"]


def _row(job: dict) -> dict:
    p = job.get("progress") or {}
    return {**job, "rows": f"{p.get('rows_done', 0)}/{p.get('rows_total', 0)}"}


def progress_line(job: dict) -> str:
    """``job 7 running [#####-----]  50.0% 5000/10000 rows 1234 rows/s ETA 4s``."""
    p = job.get("progress") or {}
    done, total = p.get("rows_done") or 0, p.get("rows_total") or 0
    rate, eta = p.get("rows_per_s"), p.get("eta_s")
    text = f"job {job['id']} {job['status']} {bar(done / total if total else 0)} " \
           f"{done}/{total} rows"
    if rate:
        text += f" {rate:,.0f} rows/s"
    if eta is not None and job["status"] == "running":
        text += f" ETA {eta:.0f}s"
    return text


def _follow(client: Client, job_id: int, out: Output, args: argparse.Namespace) -> int:
    done = client.wait_for_job(job_id, timeout=args.timeout,
                               on_progress=lambda job: out.progress(progress_line(job)))
    out.done()
    if getattr(args, "output", None):
        path = client.download_job_output(job_id, args.output)
        out.line(f"output saved to {path}")
    out.emit(done, text=f"job {job_id} succeeded: {done['progress']['rows_total']} rows"
                        + (f" at {done['progress']['rows_per_s']:,.0f} rows/s"
                           if done["progress"].get("rows_per_s") else ""))
    return 0


def cmd_run(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.run_job(
        team=args.team, model=args.model, version=args.version, alias=args.alias,
        input=None if args.input_uri else args.input, input_uri=args.input_uri,
        output_format=args.format, cpu=args.cpu, memory_mb=args.memory_mb, gpus=args.gpus,
        parallelism=args.parallelism, output_columns=args.keep or None,
        chunk_rows=args.chunk_rows, schedule=args.schedule,
        target=args.target)
    if args.no_wait:
        if args.quiet:
            print(job["id"])
        else:
            out.emit(job, text=f"job {job['id']}: {job['status']}"
                               + (f" (schedule {job['schedule']})" if job.get("schedule")
                                  else ""))
        return 0
    if not out.as_json:
        out.line(f"job {job['id']} queued ({job['model']} v{job['version']}); "
                 f"follow it: modelport job status {job['id']}")
    return _follow(client, job["id"], out, args)


def cmd_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    jobs = client.jobs(team=args.team, model=args.model, status=args.status)
    out.emit([_row(j) for j in jobs] if not out.as_json else jobs, columns=JOB_COLUMNS)
    return 0


def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.watch:
        return _follow(client, args.id, out, args)
    job = client.job(args.id)
    if out.as_json:
        out.emit({**job, "chunks": client.job_chunks(args.id)})
        return 0
    print(progress_line(job))
    if job.get("status_message"):
        print(job["status_message"])
    out.emit(client.job_chunks(args.id), columns=["index", "rows", "status", "attempts",
                                                  "rows_done", "error"])
    return 10 if job["status"] in ("failed", "cancelled") else 0


def cmd_logs(client: Client, args: argparse.Namespace, out: Output) -> int:
    text = client.job_logs(args.id, chunk=args.chunk, tail=args.tail)
    out.emit({"logs": text}, text=text or "(no log lines)")
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.cancel_job(args.id)
    out.emit(job, text=f"job {job['id']}: {job['status']}")
    return 0


def cmd_retry(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.retry_job(args.id)
    if args.wait:
        return _follow(client, job["id"], out, args)
    out.emit(job, text=f"job {job['id']}: {job['status']} (only its missing chunks run)")
    return 0


def cmd_output(client: Client, args: argparse.Namespace, out: Output) -> int:
    path = client.download_job_output(args.id, args.to)
    out.emit({"path": str(path)}, text=f"saved {path}")
    return 0


def cmd_schedule_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.emit(client.job_schedules(team=args.team), columns=SCHEDULE_COLUMNS)
    return 0


def cmd_schedule_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    resources = {k: v for k, v in (("cpu", args.cpu), ("memory_mb", args.memory_mb),
                                   ("gpus", args.gpus)) if v is not None}
    created = client.create_job_schedule(
        team=args.team, name=args.name, model=args.model, version=args.version,
        alias=args.alias, input_uri=args.input_uri, cron=args.cron or "",
        parallelism=args.parallelism, resources=resources or None, output_format=args.format,
        output_columns=args.keep or None, enabled=not args.disabled)
    out.emit(created, columns=SCHEDULE_COLUMNS)
    return 0


def _schedule_set(enabled: bool) -> Any:
    def run(client: Client, args: argparse.Namespace, out: Output) -> int:
        out.emit(client.update_job_schedule(args.id, enabled=enabled), columns=SCHEDULE_COLUMNS)
        return 0
    return run


def cmd_schedule_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    changes: dict[str, Any] = {k: v for k, v in (("cron", args.cron),
                                                 ("input_uri", args.input_uri),
                                                 ("parallelism", args.parallelism))
                               if v is not None}
    out.emit(client.update_job_schedule(args.id, **changes), columns=SCHEDULE_COLUMNS)
    return 0


def cmd_schedule_delete(client: Client, args: argparse.Namespace, out: Output) -> int:
    client.delete_job_schedule(args.id)
    out.emit({"deleted": args.id}, text=f"schedule {args.id} deleted")
    return 0


def cmd_schedule_run(client: Client, args: argparse.Namespace, out: Output) -> int:
    job = client.run_job_schedule(args.id)
    out.emit(job, text=f"job {job['id']}: {job['status']}")
    return 0


def _resources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu", type=float, help="cores per chunk container (default 1)")
    parser.add_argument("--memory-mb", type=int, help="per chunk container (default 1024)")
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--parallelism", type=int, default=1,
                        help="chunks scored at the same time")
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                        help="output format")
    parser.add_argument("--keep", action="append", metavar="COLUMN",
                        help="an input column copied next to each prediction (repeatable)")


def add_parser(sub: Any) -> None:
    """``modelport job …`` on the top-level subparsers."""
    job = sub.add_parser("job", help="batch scoring jobs: a dataset in, predictions out") \
        .add_subparsers(dest="job_command", required=True)

    run = job.add_parser("run", help="score a CSV/Parquet file (waits with a progress line)")
    run.add_argument("input", nargs="?", help="a local CSV or Parquet file")
    run.add_argument("--input-uri", help="or an object in the platform's storage: "
                                         "artifacts:/<name> or jobs:/<id>/output")
    run.add_argument("--team", required=True)
    run.add_argument("--model", required=True)
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int)
    which.add_argument("--alias")
    _resources(run)
    run.add_argument("--chunk-rows", type=int)
    run.add_argument("--target", help="execution target (default: the platform's default)")
    run.add_argument("--schedule", metavar="CRON",
                     help="also repeat it on this cron expression (5 fields, UTC)")
    run.add_argument("--no-wait", action="store_true", help="print the job and return")
    run.add_argument("-o", "--output", help="when it succeeds, download the output here")
    run.add_argument("-q", "--quiet", action="store_true", help="with --no-wait: the id only")
    run.add_argument("--timeout", type=float, default=24 * 3600)
    run.set_defaults(func=cmd_run)

    listing = job.add_parser("list")
    for flag in ("--team", "--model", "--status"):
        listing.add_argument(flag)
    listing.set_defaults(func=cmd_list)

    status = job.add_parser("status", help="progress and chunks (--watch: follow it)")
    status.add_argument("id", type=int)
    status.add_argument("--watch", action="store_true")
    status.add_argument("--timeout", type=float, default=24 * 3600)
    status.set_defaults(func=cmd_status)

    logs = job.add_parser("logs", help="the chunk containers' log lines")
    logs.add_argument("id", type=int)
    logs.add_argument("--chunk", type=int)
    logs.add_argument("--tail", type=int, default=200)
    logs.set_defaults(func=cmd_logs)

    cancel = job.add_parser("cancel")
    cancel.add_argument("id", type=int)
    cancel.set_defaults(func=cmd_cancel)

    retry = job.add_parser("retry", help="resume a failed job (only missing chunks run)")
    retry.add_argument("id", type=int)
    retry.add_argument("--wait", action="store_true")
    retry.add_argument("-o", "--output", help="with --wait: download the output here")
    retry.add_argument("--timeout", type=float, default=24 * 3600)
    retry.set_defaults(func=cmd_retry)

    output = job.add_parser("output", help="download a succeeded job's output")
    output.add_argument("id", type=int)
    output.add_argument("-o", "--to", default=".",
                        help="a file, or a directory for the server's file name (default .)")
    output.set_defaults(func=cmd_output)

    schedule = job.add_parser("schedule", help="jobs repeated on cron (or by an alert rule)") \
        .add_subparsers(dest="schedule_command", required=True)
    s_list = schedule.add_parser("list")
    s_list.add_argument("--team")
    s_list.set_defaults(func=cmd_schedule_list)
    s_create = schedule.add_parser("create")
    s_create.add_argument("name")
    s_create.add_argument("--team", required=True)
    s_create.add_argument("--model", required=True)
    which = s_create.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int)
    which.add_argument("--alias")
    s_create.add_argument("--input-uri", required=True,
                          help="artifacts:/<name>: read afresh at each run")
    s_create.add_argument("--cron", help="5 fields, UTC (none: runs only when started)")
    s_create.add_argument("--disabled", action="store_true")
    _resources(s_create)
    s_create.set_defaults(func=cmd_schedule_create)
    s_update = schedule.add_parser("update")
    s_update.add_argument("id", type=int)
    s_update.add_argument("--cron")
    s_update.add_argument("--input-uri")
    s_update.add_argument("--parallelism", type=int)
    s_update.set_defaults(func=cmd_schedule_update)
    for verb, enabled in (("enable", True), ("disable", False)):
        p = schedule.add_parser(verb)
        p.add_argument("id", type=int)
        p.set_defaults(func=_schedule_set(enabled))
    s_delete = schedule.add_parser("delete")
    s_delete.add_argument("id", type=int)
    s_delete.set_defaults(func=cmd_schedule_delete)
    s_run = schedule.add_parser("run", help="one run now")
    s_run.add_argument("id", type=int)
    s_run.set_defaults(func=cmd_schedule_run)
