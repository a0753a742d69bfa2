"""Autoscaling from the command line: ``modelport deploy … --autoscale MIN:MAX [--metric …]
[--target N] [--scale-down-delay S] [--idle-to-zero S]``, ``modelport autoscale NAME`` to
change the settings of a deployment (or ``--off``), and the lines ``modelport status`` prints.

Changing settings never makes a new revision (nothing restarts): the server resizes in place.
The server checks the values and names the field it refuses; this module only shapes them.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import errors
from .client import Client
from .output import Output

METRICS = ("concurrency", "rps", "cpu")
UNITS = {"concurrency": "requests in flight", "rps": "req/s", "cpu": "% CPU"}


def bounds(value: str) -> tuple[int, int]:
    """``MIN:MAX`` (``4`` alone: 1 to 4) as two whole numbers."""
    low, sep, high = value.partition(":")
    try:
        return (int(low), int(high)) if sep else (1, int(low))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected MIN:MAX replicas, e.g. 1:4 (got {value!r})") from None


def idle_seconds(value: str) -> int | None:
    """Seconds without a request before scaling to zero; ``off`` (or ``never``): never."""
    if value.lower() in ("off", "never", "none"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected seconds or 'off' (got {value!r})") from None


def _setting_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metric", choices=METRICS,
                        help="what --target counts per replica: requests in flight "
                             "(concurrency, default), requests per second (rps) or CPU %%")
    parser.add_argument("--target", type=float,
                        help="load per replica to aim for (defaults: 4 in flight, 50 req/s, "
                             "70 %% CPU)")
    parser.add_argument("--scale-down-delay", type=int, metavar="S",
                        help="scale down only to the most replicas wanted over the last S "
                             "seconds (default 300)")
    parser.add_argument("--idle-to-zero", type=idle_seconds, metavar="S", default=...,
                        help="run no replica after S seconds without a request; the next "
                             "request wakes it ('off': never, the default)")


def add_deploy_arguments(parser: argparse.ArgumentParser) -> None:
    """The autoscaling options of ``modelport deploy``."""
    parser.add_argument("--autoscale", type=bounds, metavar="MIN:MAX",
                        help="let the platform move the replica count between MIN and MAX "
                             "(--replicas is then the count it starts with)")
    _setting_arguments(parser)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.metric:
        out["metric"] = args.metric
    if args.target is not None:
        out["target"] = args.target
    if args.scale_down_delay is not None:
        out["scale_down_delay_s"] = args.scale_down_delay
    if args.idle_to_zero is not ...:
        out["idle_to_zero_after_s"] = args.idle_to_zero
    return out


def from_deploy_args(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``autoscaling`` object of ``modelport deploy`` (None: a fixed count)."""
    rest = _settings(args)
    if args.autoscale is None:
        if rest:
            raise errors.BadRequest("--metric, --target, --scale-down-delay and "
                                    "--idle-to-zero need --autoscale MIN:MAX")
        return None
    low, high = args.autoscale
    return {"min_replicas": low, "max_replicas": high, **rest}


def merged(current: dict[str, Any] | None, args: argparse.Namespace) -> dict[str, Any]:
    """The deployment's settings with what was given changed (a new metric without a target
    takes the metric's default target)."""
    new = dict(current or {})
    if args.min is not None:
        new["min_replicas"] = args.min
    if args.max is not None:
        new["max_replicas"] = args.max
    given = _settings(args)
    if "metric" in given and given["metric"] != new.get("metric") and "target" not in given:
        new.pop("target", None)
    new.update(given)
    if "max_replicas" not in new:
        raise errors.BadRequest("turning autoscaling on needs --max (and --min, default 1)")
    return new


def describe(autoscaling: dict[str, Any] | None) -> str:
    """One line: the bounds, the target, the delays."""
    if not autoscaling:
        return "fixed replica count (autoscaling off)"
    a = autoscaling
    zero = (f"; to zero after {a['idle_to_zero_after_s']} s without a request"
            if a.get("idle_to_zero_after_s") else "; never to zero")
    return (f"{a['min_replicas']}-{a['max_replicas']} replicas at {a['target']:g} "
            f"{UNITS.get(a['metric'], a['metric'])} per replica; scale down after "
            f"{a['scale_down_delay_s']} s{zero}")


def status_lines(dep: dict[str, Any]) -> list[str]:
    """What ``modelport status`` adds for an autoscaled deployment."""
    autoscaling = dep.get("autoscaling")
    if not autoscaling:
        return []
    count = dep.get("desired_replicas")
    now = ("idle (scaled to zero): the next request starts a replica" if count == 0
           else f"{count} replica(s) now")
    when = f" (last scaled {dep['scaled_at']})" if dep.get("scaled_at") else ""
    return [f"autoscaling: {describe(autoscaling)}", f"{now}{when}"]


def status_word(dep: dict[str, Any]) -> str:
    """The status as people read it."""
    return "idle (scaled to zero)" if dep.get("status") == "idle" else str(dep.get("status"))


def cmd_autoscale(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.off:
        if args.min is not None or args.max is not None or _settings(args):
            raise errors.BadRequest("--off takes no other setting")
        updated = client.set_autoscaling(args.name, None, replicas=args.replicas)
    else:
        current = client.deployment(args.name).get("autoscaling")
        updated = client.set_autoscaling(args.name, merged(current, args),
                                         replicas=args.replicas)
    text = (f"{args.name}: {describe(updated.get('autoscaling'))}; "
            f"{updated.get('desired_replicas')} replica(s) now")
    out.emit(updated, text=text)
    return 0


def add_parser(sub: Any) -> None:
    """``modelport autoscale NAME``."""
    scale = sub.add_parser(
        "autoscale", help="change a deployment's autoscaling (no new revision), or --off",
        description="Change only what you give; the rest stays. Turning autoscaling on needs "
                    "--max. --off keeps the current count as a fixed one.")
    scale.add_argument("name")
    scale.add_argument("--min", type=int, help="fewest replicas while there is traffic")
    scale.add_argument("--max", type=int, help="most replicas")
    _setting_arguments(scale)
    scale.add_argument("--replicas", type=int,
                       help="the count now (held within the bounds; with --off: the fixed "
                            "count)")
    scale.add_argument("--off", action="store_true",
                       help="back to a fixed replica count")
    scale.set_defaults(func=cmd_autoscale)
