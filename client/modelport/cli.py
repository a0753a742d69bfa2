"""``modelport`` — the command line for people (tables, progress) and CI jobs (``--json``).

Exit codes: 0 success, 1 other error, 2 usage, 3 authentication/permission, 4 not found,
5 conflict (name taken, quota exceeded, no shadow to promote or discard), 6 invalid input,
7 rate limited, 8 server error, 9 timed out waiting, 10 what we waited for failed (version
``failed``, deployment ``failed``, job ``failed`` or ``cancelled``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import cli_jobs, cli_keys, cli_scale, errors, login
from .client import Client
from .login import cmd_login
from .output import Output, bar, json_arg, table

__all__ = ["build_parser", "main", "table"]


# --- commands -------------------------------------------------------------------------------------
def cmd_info(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.emit(client.info())
    return 0


def cmd_teams(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.emit(client.teams(), columns=["slug", "name", "my_role", "member_count"])
    return 0


def cmd_models_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    rows = client.models(team=args.team, tag=args.tag, alias=args.alias, search=args.search)
    for row in rows:
        row["aliases"] = [f"{a['alias']}=v{a['version']}" for a in row.get("aliases", [])]
    out.emit(rows, columns=["name", "team", "latest_version", "aliases", "tags"])
    return 0


def cmd_models_show(client: Client, args: argparse.Namespace, out: Output) -> int:
    model = client.model(args.name)
    versions = client.versions(args.name)
    if out.as_json:
        out.emit({**model, "versions": versions})
        return 0
    print(f"{model['name']}  (team {model['team']})  {model['description']}")
    out.emit(versions, columns=["version", "status", "flavor", "aliases", "metrics",
                                "created_by", "created_at"])
    return 0


def cmd_models_create(client: Client, args: argparse.Namespace, out: Output) -> int:
    try:
        model = client.create_model(name=args.name, team=args.team,
                                    description=args.description, tags=args.tag or [])
    except errors.Conflict as exc:
        if not args.exist_ok or exc.code != "name_taken":
            raise
        model = client.model(args.name)  # 404 when it is another team's model you cannot see
        if model["team"] != args.team:
            raise errors.Conflict(f"A model named '{args.name}' already exists in team "
                                  f"'{model['team']}', not '{args.team}'.", status=409,
                                  code="name_taken") from None
    out.emit(model, columns=["name", "team", "tags"])
    return 0


def cmd_models_register(client: Client, args: argparse.Namespace, out: Output) -> int:
    def upload_progress(done: int, total: int) -> None:
        out.progress(f"uploading {Path(args.file).name} {bar(done / total if total else 1)}")

    accepted = client.register_version(
        args.name, None if args.source else args.file, source=args.source, format=args.format,
        input_example=json_arg(args.input_example), reference_data=args.reference_data,
        description=args.description, git_commit=args.git_commit,
        metrics=json_arg(args.metrics), progress=upload_progress)
    out.done()
    if not args.wait:
        if args.quiet:
            print(accepted["version"])
        else:
            out.emit(accepted, text=f"{args.name} v{accepted['version']}: {accepted['status']}")
        return 0
    return _follow_version(client, args.name, accepted["version"], out, args.timeout,
                           quiet=args.quiet)


def show_event(event: dict, out: Output) -> None:
    """One validation event as people read it: a step with its percent, the log's lines."""
    kind, message = event["kind"], event["message"]
    if kind == "step":
        out.line(f"[{event.get('progress') or 0:3d}%] {message}")
    elif kind == "log":
        for text in message.splitlines():
            out.line(f"       {text}")
    elif kind == "failed":
        out.line(f"[FAIL] {message}")
    elif kind == "ready":
        out.line(f"[ OK ] {message}")
    else:
        out.line(f"       ({message})")


def _follow_version(client: Client, name: str, number: int, out: Output,
                    timeout: float, since: int | None = None, *, quiet: bool = False) -> int:
    """Stream a version's validation (steps, image build and sandbox lines; after event id
    ``since``) until it is ready (exit 0) or failed (OperationFailed: exit 10, the reason).
    ``quiet``: the stream goes to stderr and stdout gets the version number alone."""
    lines = Output(True) if quiet else out
    ready = client.wait_for_version(name, number, timeout=timeout, since=since,
                                    on_event=lambda event: show_event(event, lines))
    if quiet:
        print(ready["version"])
    else:
        out.emit(ready, text=f"{name} v{ready['version']} is ready "
                             f"(sha256 {ready['artifact']['sha256'][:12]}…)")
    return 0


def cmd_models_versions(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.version is None:
        if args.watch:
            raise errors.BadRequest("--watch follows one version: give its number")
        out.emit(client.versions(args.name), columns=["version", "status", "flavor",
                                                      "aliases", "created_by", "created_at"])
        return 0
    if args.watch:
        return _follow_version(client, args.name, args.version, out, args.timeout)
    version = client.version(args.name, args.version)
    if out.as_json:
        out.emit(version)
        return 0
    print(f"{args.name} v{version['version']}: {version['status']} "
          f"({version.get('progress', 0)}%) {version['status_message']}")
    tail = version.get("log_tail") or []
    if tail:
        print("last lines of its validation log:")
        for text in tail:
            print(f"  {text}")
    return 10 if version["status"] == "failed" else 0


def cmd_models_retry(client: Client, args: argparse.Namespace, out: Output) -> int:
    since = None
    if args.wait:  # stream this attempt only: the previous one's events are already there
        earlier = client.version_events(args.name, args.version)
        since = earlier[-1]["id"] if earlier else None
    accepted = client.retry_version(args.name, args.version)
    if not args.wait:
        out.emit(accepted, text=f"{args.name} v{args.version}: {accepted['status']} "
                                f"({accepted['status_message']})")
        return 0
    return _follow_version(client, args.name, args.version, out, args.timeout, since=since)


def cmd_models_alias(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.set_alias(args.name, args.alias, args.version, comment=args.comment)
    if result.get("status") == "pending":
        out.emit(result, text=f"'{args.alias}' is protected: request {result['id']} waits for "
                              "a maintainer.")
    else:
        out.emit(result, text=f"{args.name}@{args.alias} -> v{result['version']}")
    return 0


def _watch(client: Client, name: str, out: Output, timeout: float) -> int:
    def show(dep: dict) -> None:
        out.progress(f"{name}: {dep['status']} {bar(dep.get('progress', 0) / 100)} "
                     f"rev {dep.get('revision')} {dep.get('status_message', '')}")

    healthy = client.wait_until_healthy(name, timeout=timeout, on_progress=show)
    out.done()
    out.emit(healthy, text=f"{name} is {cli_scale.status_word(healthy)} at "
                           f"{healthy.get('endpoint', '')}")
    return 0


def _strategy(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``strategy`` object from ``--strategy`` and its options (None: the server's
    default). Options of another strategy are sent as given: the server names the mismatch."""
    if not args.strategy:
        return None
    strategy: dict[str, Any] = {"type": args.strategy}
    if args.steps:
        strategy["steps"] = args.steps
    if args.interval:
        strategy["interval_s"] = args.interval
    if args.step_percent:
        strategy["step_percent"] = args.step_percent
    if getattr(args, "shadow_percent", None) is not None:
        strategy["percent"] = args.shadow_percent
    if getattr(args, "tolerance", None) is not None:
        strategy["tolerance"] = args.tolerance
    return strategy


def cmd_deploy(client: Client, args: argparse.Namespace, out: Output) -> int:
    try:
        created = client.deploy(name=args.name, team=args.team, model=args.model,
                                version=args.version, alias=args.alias, replicas=args.replicas,
                                cpu=args.cpu, memory_mb=args.memory_mb, gpus=args.gpus,
                                strategy=_strategy(args),
                                autoscaling=cli_scale.from_deploy_args(args))
    except errors.Conflict as exc:
        if not args.exist_ok or exc.code != "name_taken":
            raise
        created = client.deployment(args.name)  # 404 when it is a team's you cannot see
        if (created["team"], created["model"]) != (args.team, args.model):
            raise errors.Conflict(
                f"A deployment named '{args.name}' already exists, of model "
                f"'{created['model']}' in team '{created['team']}'.", status=409,
                code="name_taken") from None
    if args.wait:
        return _watch(client, args.name, out, args.timeout)
    out.emit(created, columns=["name", "status", "revision", "endpoint"])
    return 0


def cmd_update(client: Client, args: argparse.Namespace, out: Output) -> int:
    changes: dict[str, Any] = {}
    if args.version is not None:
        changes["version"] = args.version
    if args.alias:
        changes["alias"] = args.alias
    if args.replicas is not None:
        changes["replicas"] = args.replicas
    resources = {"cpu": args.cpu, "memory_mb": args.memory_mb, "gpus": args.gpus}
    if any(v is not None for v in resources.values()):
        changes["resources"] = {k: v for k, v in resources.items() if v is not None}
    strategy = _strategy(args)
    if strategy:
        changes["strategy"] = strategy
    if not changes:
        raise errors.BadRequest("nothing to change: give --version, --alias, --replicas, "
                                "--cpu, --memory-mb, --gpus or --strategy")
    updated = client.update_deployment(args.name, **changes)
    if args.wait:
        return _watch(client, args.name, out, args.timeout)
    out.emit(updated, columns=["name", "status", "revision", "strategy"])
    return 0


def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.watch:
        return _watch(client, args.name, out, args.timeout)
    dep = client.deployment(args.name)
    if out.as_json:
        out.emit(dep)
        return 0
    print(f"{dep['name']}: {cli_scale.status_word(dep)} (revision {dep.get('revision')}) "
          f"{dep.get('status_message', '')}")
    for line in cli_scale.status_lines(dep):
        print(line)
    rollout, retry = dep.get("rollout"), dep.get("retry")
    if rollout:
        print(f"{rollout['strategy']} step {rollout['step']} of {rollout['steps']}: "
              f"{rollout['percent']}% of traffic; next step at {rollout['next_step_at']}")
    if retry:
        when = (f"next automatic attempt ({retry['attempt']} of {retry['max_attempts']}) at "
                f"{retry['next_attempt_at']}" if retry["next_attempt_at"]
                else f"run `modelport retry {dep['name']}` once it is fixed")
        print(f"failed: {retry['reason']}\n{when}")
    out.emit(dep.get("replicas", []), columns=["id", "revision", "status", "url"])
    shadow = dep.get("shadow")
    if shadow:
        print(f"\nshadow: revision {shadow['revision']} gets a copy of {shadow['percent']}% of "
              "requests (answers go nowhere; promote or discard it)")
        agreement = shadow.get("agreement")
        out.emit({**shadow, "agreement": None if agreement is None else f"{agreement:.1%}"},
                 columns=["requests", "errors", "dropped", "compared", "agreed", "agreement",
                          "p50_ms", "p95_ms"])
    return 0


def cmd_rollback(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.rollback(args.name, args.revision)
    if args.wait:
        return _watch(client, args.name, out, args.timeout)
    out.emit(result, columns=["name", "status", "revision"])
    return 0


def cmd_retry(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.retry(args.name)
    if args.wait:
        return _watch(client, args.name, out, args.timeout)
    out.emit(result, columns=["name", "status", "revision", "status_message"])
    return 0


def cmd_promote(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.promote(args.name, _strategy(args))
    if args.wait:
        return _watch(client, args.name, out, args.timeout)
    out.emit(result, columns=["name", "status", "revision", "strategy"])
    return 0


def cmd_discard(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.discard(args.name)
    if args.wait:
        return _watch(client, args.name, out, args.timeout)
    out.emit(result, columns=["name", "status", "revision"])
    return 0


def cmd_logs(client: Client, args: argparse.Namespace, out: Output) -> int:
    logs = client.logs(args.name, replica=args.replica, tail=args.tail)
    if out.as_json or not isinstance(logs, dict):
        out.emit(logs)
        return 0
    for replica, text in (logs.get("replicas") or logs).items():
        print(f"==> {replica} <==\n{text}")
    return 0


def cmd_predict(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.csv:
        payload: Any = Path(args.csv).read_bytes()
        result = client.predict(args.name, payload, content_type="text/csv")
    else:
        result = client.predict(args.name, json_arg(args.data or "-"))
    out.emit(result)
    return 0


def cmd_quota_show(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.emit(client.quota(args.team))
    return 0


def cmd_quota_request(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.request_resources(team=args.team, justification=args.justification,
                                      cpu=args.cpu, memory_mb=args.memory_mb, gpus=args.gpus,
                                      gpu_model=args.gpu_model, expires_at=args.until)
    out.emit(result, text=f"request {result.get('id')} filed: {result.get('status')}")
    return 0


# --- parser ---------------------------------------------------------------------------------------
def _steps(value: str) -> list[int]:
    try:
        return [int(step) for step in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole percentages separated by commas, e.g. 10,50,100 (got {value!r})"
        ) from None


def _strategy_arguments(parser: argparse.ArgumentParser, *, shadow: bool = True,
                        default: str = "rolling") -> None:
    kinds = ["rolling", "blue_green", "canary", "linear", *(["shadow"] if shadow else [])]
    parser.add_argument("--strategy", choices=kinds,
                        help=f"how the new revision rolls out (default: {default})")
    parser.add_argument("--steps", type=_steps, help="canary traffic steps, e.g. 10,50,100")
    parser.add_argument("--interval", type=int, help="seconds between canary or linear steps")
    parser.add_argument("--step-percent", type=int,
                        help="linear: the share of traffic each step adds (default 25)")
    if shadow:
        parser.add_argument("--shadow-percent", type=int,
                            help="shadow: share of requests mirrored, 1-100 (default 100)")
        parser.add_argument("--tolerance", type=float,
                            help="shadow: numeric predictions this close agree (default 1e-6)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelport", description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="platform URL (default: $MODELPORT_URL or login config)")
    parser.add_argument("--token", help="API token (default: $MODELPORT_TOKEN or login config)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    login.add_parser(sub)

    sub.add_parser("info", help="platform version, runtime, MLflow URI, limits") \
        .set_defaults(func=cmd_info)
    sub.add_parser("teams", help="teams you can see").set_defaults(func=cmd_teams)

    models = sub.add_parser("models", help="the model registry").add_subparsers(
        dest="models_command", required=True)
    listing = models.add_parser("list")
    for flag in ("--team", "--tag", "--alias", "--search"):
        listing.add_argument(flag)
    listing.set_defaults(func=cmd_models_list)
    show = models.add_parser("show")
    show.add_argument("name")
    show.set_defaults(func=cmd_models_show)
    create = models.add_parser("create")
    create.add_argument("name")
    create.add_argument("--team", required=True)
    create.add_argument("--description", default="")
    create.add_argument("--tag", action="append")
    create.add_argument("--exist-ok", action="store_true",
                        help="a model of that name in that team already: fine (exit 0)")
    create.set_defaults(func=cmd_models_create)
    register = models.add_parser("register", help="upload a version (or import --source)")
    register.add_argument("name")
    register.add_argument("file", nargs="?")
    register.add_argument("--source", help="runs:/<run>/<path> or models:/<name>/<version>")
    register.add_argument("--format", choices=["mlflow", "sklearn"],
                          help="default: told from the file (.joblib/.pkl/.pickle: sklearn, "
                               ".zip/.tar.gz: mlflow)")
    register.add_argument("--input-example", help="JSON, @file or - for stdin")
    register.add_argument("--reference-data", help="CSV/Parquet drift baseline")
    register.add_argument("--description", default="")
    register.add_argument("--git-commit")
    register.add_argument("--metrics", help="JSON object")
    register.add_argument("--wait", action="store_true",
                          help="stream its validation (steps, image build, sandbox output) "
                               "until ready or failed")
    register.add_argument("--timeout", type=float, default=900)
    register.add_argument("-q", "--quiet", action="store_true",
                          help="print only the version number (the stream goes to stderr)")
    register.set_defaults(func=cmd_models_register)
    versions = models.add_parser("versions", help="a model's versions, one version, or "
                                                  "--watch its validation")
    versions.add_argument("name")
    versions.add_argument("version", type=int, nargs="?")
    versions.add_argument("--watch", action="store_true",
                          help="stream the version's validation (steps, image build and "
                               "sandbox lines) until it is ready (exit 0) or failed (exit 10)")
    versions.add_argument("--timeout", type=float, default=900)
    versions.set_defaults(func=cmd_models_versions)
    retry_version = models.add_parser("retry", help="validate a failed version again")
    retry_version.add_argument("name")
    retry_version.add_argument("version", type=int)
    retry_version.add_argument("--wait", action="store_true",
                               help="stream its validation until ready or failed (exit 10)")
    retry_version.add_argument("--timeout", type=float, default=900)
    retry_version.set_defaults(func=cmd_models_retry)
    alias = models.add_parser("alias", help="point an alias at a version")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=int)
    alias.add_argument("--comment", default="")
    alias.set_defaults(func=cmd_models_alias)

    deploy = sub.add_parser("deploy", help="deploy a version or an alias")
    deploy.add_argument("name")
    deploy.add_argument("--team", required=True)
    deploy.add_argument("--model", required=True)
    which = deploy.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", type=int)
    which.add_argument("--alias")
    deploy.add_argument("--replicas", type=int, default=1)
    deploy.add_argument("--cpu", type=float, default=1.0)
    deploy.add_argument("--memory-mb", type=int, default=1024)
    deploy.add_argument("--gpus", type=int, default=0)
    _strategy_arguments(deploy)
    cli_scale.add_deploy_arguments(deploy)
    deploy.add_argument("--wait", action="store_true")
    deploy.add_argument("--timeout", type=float, default=600)
    deploy.add_argument("--exist-ok", action="store_true",
                        help="it exists already (same team and model): fine — it follows its "
                             "alias by itself; with --wait, wait for it like status --watch")
    deploy.set_defaults(func=cmd_deploy)

    update = sub.add_parser("update", help="change a deployment (a new revision), e.g. shadow "
                                           "a new version")
    update.add_argument("name")
    which = update.add_mutually_exclusive_group()
    which.add_argument("--version", type=int)
    which.add_argument("--alias")
    update.add_argument("--replicas", type=int)
    update.add_argument("--cpu", type=float)
    update.add_argument("--memory-mb", type=int)
    update.add_argument("--gpus", type=int)
    _strategy_arguments(update, default="the deployment's current strategy")
    update.add_argument("--wait", action="store_true")
    update.add_argument("--timeout", type=float, default=600)
    update.set_defaults(func=cmd_update)

    status = sub.add_parser("status", help="a deployment's status (--watch: live progress)")
    status.add_argument("name")
    status.add_argument("--watch", action="store_true")
    status.add_argument("--timeout", type=float, default=600)
    status.set_defaults(func=cmd_status)

    rollback = sub.add_parser("rollback", help="back to the previous healthy revision")
    rollback.add_argument("name")
    rollback.add_argument("--revision", type=int)
    rollback.add_argument("--wait", action="store_true")
    rollback.add_argument("--timeout", type=float, default=600)
    rollback.set_defaults(func=cmd_rollback)

    retry = sub.add_parser("retry", help="run a failed deployment's revision again")
    retry.add_argument("name")
    retry.add_argument("--wait", action="store_true")
    retry.add_argument("--timeout", type=float, default=600)
    retry.set_defaults(func=cmd_retry)

    promote = sub.add_parser("promote", help="roll a shadow revision out for real")
    promote.add_argument("name")
    _strategy_arguments(promote, shadow=False)
    promote.add_argument("--wait", action="store_true")
    promote.add_argument("--timeout", type=float, default=600)
    promote.set_defaults(func=cmd_promote)

    discard = sub.add_parser("discard", help="end a shadow without promoting it")
    discard.add_argument("name")
    discard.add_argument("--wait", action="store_true")
    discard.add_argument("--timeout", type=float, default=600)
    discard.set_defaults(func=cmd_discard)

    logs = sub.add_parser("logs", help="container logs of a deployment's replicas")
    logs.add_argument("name")
    logs.add_argument("--replica")
    logs.add_argument("--tail", type=int, default=200)
    logs.set_defaults(func=cmd_logs)

    predict = sub.add_parser("predict", help="call a deployment through the gateway")
    predict.add_argument("name")
    predict.add_argument("--data", help="JSON body, @file, or - for stdin (default)")
    predict.add_argument("--csv", help="a CSV file to send as text/csv")
    predict.set_defaults(func=cmd_predict)

    quota = sub.add_parser("quota", help="team quotas and resource requests").add_subparsers(
        dest="quota_command", required=True)
    quota_show = quota.add_parser("show")
    quota_show.add_argument("team")
    quota_show.set_defaults(func=cmd_quota_show)
    quota_request = quota.add_parser("request")
    quota_request.add_argument("--team", required=True)
    quota_request.add_argument("--justification", required=True)
    quota_request.add_argument("--cpu", type=float)
    quota_request.add_argument("--memory-mb", type=int)
    quota_request.add_argument("--gpus", type=int)
    quota_request.add_argument("--gpu-model")
    quota_request.add_argument("--until", help="ISO 8601 expiry of a temporary grant")
    quota_request.set_defaults(func=cmd_quota_request)
    cli_jobs.add_parser(sub)
    cli_scale.add_parser(sub)
    cli_keys.add_parser(sub)
    _global_options_anywhere(parser)
    return parser


def _global_options_anywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--json``, ``--url`` and ``--token`` after the command too (``modelport models
    list --json``): each subcommand gets them, defaulting to what was given before it."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in action.choices.values():
            taken = {opt for a in sub._actions for opt in a.option_strings}
            if "--json" not in taken:
                sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                                 help="machine-readable output")
            for flag in ("--url", "--token"):
                if flag not in taken:
                    sub.add_argument(flag, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            _global_options_anywhere(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output(args.json)
    try:
        if args.command == "login":
            return cmd_login(args, out)
        with Client(args.url, args.token) as client:
            return args.func(client, args, out)
    except errors.ModelportError as exc:
        out.done()
        if args.json:
            print(json.dumps({"error": exc.message, "status": exc.status, "code": exc.code}),
                  file=sys.stderr)
        else:
            print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (json.JSONDecodeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 6
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
