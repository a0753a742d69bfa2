"""What every PostgreSQL benchmark here shares: a scratch database next to the one in
``DATABASE_URL``, Django set up against it (migrated), and percentiles.

    from scratch import setup_django, percentile
    setup_django("modelport_bench_pages")   # before importing any model
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def scratch_database(url: str, name: str) -> str:
    """Create database ``name`` on the server of ``url`` unless it exists; return its URL."""
    import psycopg

    parsed = urlparse(url)
    # Through the maintenance database: the one named in ``url`` need not exist.
    with psycopg.connect(urlunparse(parsed._replace(path="/postgres")), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path=f"/{name}"))


def setup_django(name: str, *, env: dict[str, str] | None = None, migrate: bool = True) -> str:
    """Point Django at scratch database ``name`` (on DATABASE_URL's server), set it up and
    migrate it. ``env``: extra environment (settings) to set first. Returns the database URL."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit("Set DATABASE_URL=postgres://… (a server where a scratch database may be made)")
    os.environ["DATABASE_URL"] = scratch_database(url, name)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    os.environ.setdefault("MODELPORT_DATA_DIR", str(ROOT / "var" / "bench"))
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    os.environ.update(env or {})

    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    return os.environ["DATABASE_URL"]


def percentile(timings: list[float], q: float) -> float:
    """The q-quantile (0-1) of ``timings`` by the nearest-rank method."""
    ordered = sorted(timings)
    return ordered[max(0, round(len(ordered) * q) - 1)]
