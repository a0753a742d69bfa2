"""``python -m serving --model-dir DIR --host 127.0.0.1 --port N [--workers W] [--name NAME]``."""

from __future__ import annotations

import sys

from serving.config import Settings, export_args_to_env, parse_args
from serving.server import run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    export_args_to_env(args)
    settings = Settings.from_env()
    run(settings, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
