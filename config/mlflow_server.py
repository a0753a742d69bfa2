"""MLflow's tracking server as one process: ``mlflow server`` without the parent that only waits.

    python -m config.mlflow_server --backend-store-uri ... --uvicorn-opts "--uds ..."

``mlflow server`` builds the uvicorn command and its environment, starts uvicorn as a child and
then stays, with all of MLflow imported (~190 MB), only to forward signals — its other duty,
managing the job runner's consumers, is off under `make run`
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``). This runs MLflow's own CLI unchanged and
replaces that last spawn with an ``exec``: the same server, with the same options and
environment, in one process the supervisor watches directly (issue 26).

Takes exactly ``mlflow server``'s options. Imports nothing from Django.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def _exec_instead(cmd: Sequence[str], *, extra_env: dict[str, str] | None = None,
                  **_options: object) -> None:
    """Stands in for ``mlflow.utils.process._exec_cmd`` at the server's start: becomes it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], list(cmd), {**os.environ, **(extra_env or {})})  # noqa: S606


def main(argv: list[str] | None = None) -> None:
    if os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "").lower() not in ("false", "0"):
        # With the job runner on, `mlflow server` must stay to start and stop its consumers.
        os.execvp(sys.executable, [sys.executable, "-m", "mlflow", "server",  # noqa: S606
                                   *(sys.argv[1:] if argv is None else argv)])
    import mlflow.server  # noqa: PLC0415 - lazy: ~2 s of import, wasted when exec'ing above
    from mlflow.cli import cli  # noqa: PLC0415 - lazy: as above

    mlflow.server._exec_cmd = _exec_instead  # the one spawn _run_server makes
    cli(["server", *(sys.argv[1:] if argv is None else argv)], prog_name="mlflow")


if __name__ == "__main__":
    main()
