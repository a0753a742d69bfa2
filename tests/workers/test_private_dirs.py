"""Socket directories are created private whatever the process's umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from workers.runtimes.base import private_dirs


def test_missing_parents_are_created_0700_and_existing_ones_are_left_alone(tmp_path: Path):
    existing = tmp_path / "var"
    existing.mkdir(mode=0o755)
    existing.chmod(0o755)
    old = os.umask(0o022)
    try:
        made = private_dirs(existing / "run" / "replicas")
    finally:
        os.umask(old)
    assert made == existing / "run" / "replicas"
    for path in (existing / "run", made):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755
    assert private_dirs(made) == made  # idempotent
