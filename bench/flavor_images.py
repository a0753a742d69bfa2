"""Per-flavor serving images: first build, rebuilds, image size — on this machine's Docker.

    .venv/bin/python bench/flavor_images.py                         # all flavors
    .venv/bin/python bench/flavor_images.py --flavors sklearn,onnx  # some

For each flavor's model (``bench/flavor_models.py``: the requirements its stock-mlflow save
writes, pinned to this venv's versions) the platform's own ``ImageBuilder`` — the code a
version's validation runs — builds the serving image three times, into a repository of its own
(``modelport-bench/serving``, removed at the end: nothing is left on the engine):

1. first build: an empty wheel cache (wheels fetched for the base image's Python, from the
   host's pip configuration: its indexes and local wheel folders, pip's download cache as it
   is), then ``docker build`` with no network;
2. rebuild, cached wheels: the image removed (with its build layers), the wheelhouse kept —
   what a rebuild after a serving-code or base-image change costs;
3. cached image: the same requirements again — what the next version with the same
   requirements waits (``reused``).

Prints the seconds of each, the image size and how many of the first build's steps Docker's
layer cache served (another image on the engine with the same layers), with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from flavor_models import FLAVORS, save
from harness import REPO_ROOT

REPOSITORY = "modelport-bench/serving"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--flavors", default=",".join(FLAVORS), help="comma-separated (default all)")
    ap.add_argument("--base-image", default=os.environ.get("MODELPORT_SERVING_BASE_IMAGE",
                                                           "modelport/base:bookworm"))
    ap.add_argument("--keep", action="store_true", help="leave the built images on the engine")
    args = ap.parse_args()
    flavors = [f.strip() for f in args.flavors.split(",") if f.strip()]
    if unknown := [f for f in flavors if f not in FLAVORS]:
        raise SystemExit(f"unknown flavor: {', '.join(unknown)}")
    sys.path.insert(0, str(REPO_ROOT))
    import docker

    from workers.runtimes.images import ImageBuilder

    client = docker.from_env(timeout=600)
    rows: list[tuple] = []
    started = time.perf_counter()
    try:
        measure(client, ImageBuilder, flavors, args, rows)
    finally:  # interrupted too: this script's own repository leaves nothing on the engine
        if not args.keep:
            for image in client.images.list(name=REPOSITORY):
                with contextlib.suppress(Exception):
                    client.images.remove(image.id, force=True)
    report(args, rows, started)
    return 0


def measure(client: object, image_builder: type, flavors: list[str], args: argparse.Namespace,
            rows: list[tuple]) -> None:
    """First build, rebuild with cached wheels, cached image: one flavor after another."""
    with tempfile.TemporaryDirectory(prefix="modelport-images-") as tmp:
        for flavor in flavors:
            model = save(flavor, Path(tmp) / "models")
            wheels = Path(tmp) / f"wheels-{flavor}"
            builder = image_builder(client, args.base_image, repository=REPOSITORY,
                                    wheel_cache=wheels)
            lines: list[str] = []
            print(f"{flavor}: first build ...", flush=True)
            first = builder.ensure_image_report(model.requirements, lines.append)
            # Docker's layer cache: steps another image on the engine already built.
            layer_cache = (sum("Using cache" in line for line in lines),
                           sum(line.startswith("Step ") for line in lines))
            with contextlib.suppress(Exception):
                client.images.remove(first.tag)  # ours: this script's own repository
            print(f"{flavor}: rebuild with cached wheels ...", flush=True)
            rebuilt = builder.ensure_image_report(model.requirements)
            reused = builder.ensure_image_report(model.requirements)
            rows.append((flavor, first, rebuilt, reused, layer_cache, len(model.requirements)))
            print(f"  {flavor}: first {first.seconds:.0f} s, rebuild {rebuilt.seconds:.0f} s, "
                  f"cached {reused.seconds:.2f} s, {(first.size_bytes or 0) / 1e6:.0f} MB",
                  flush=True)
            if not args.keep:
                with contextlib.suppress(Exception):
                    client.images.remove(rebuilt.tag)


def report(args: argparse.Namespace, rows: list[tuple], started: float) -> None:
    print()
    print(f"# Serving image per flavor — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, base "
          f"{args.base_image}, {os.cpu_count()} CPUs, load average at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; run took "
          f"{(time.perf_counter() - started) / 60:.1f} min")
    print()
    print("| flavor | requirements | first build s | rebuild (cached wheels) s | cached image s "
          "| image size MB | first build's steps from layer cache |")
    print("|---|---|---|---|---|---|---|")
    for flavor, first, rebuilt, reused, layer_cache, n in rows:
        print(f"| {flavor} | {n} | {first.seconds:.0f} | {rebuilt.seconds:.0f} | "
              f"{reused.seconds:.2f} | {(first.size_bytes or 0) / 1e6:.0f} | "
              f"{layer_cache[0]} of {layer_cache[1]} |")


if __name__ == "__main__":
    sys.exit(main())
