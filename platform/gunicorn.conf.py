"""gunicorn settings for the web container and `make run` (env-driven;
`gunicorn -c platform/gunicorn.conf.py`; command-line options override them)."""

import os

# gunicorn puts the working directory (the repository, /app in the image) on sys.path first.
from core.prom_files import compact

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 10
keepalive = 5
accesslog = "-"
errorlog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
# Heartbeat files in memory, not on a possibly slow or read-only filesystem.
SHM = "/dev/shm"  # noqa: S108 - gunicorn's recommended worker_tmp_dir in containers
worker_tmp_dir = SHM if os.path.isdir(SHM) else None
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = 200
# gunicorn 25+ opens a control socket at ~/.gunicorn/gunicorn.ctl by default: one path for every
# installation of the same user (a colleague's `make run`, CI, a bench), so a second start would
# take over the first one's socket. Nothing here uses it; the supervisor signals processes.
control_socket_disable = True


def on_starting(server):
    """The workers learn how many they are: the Django path's gateway splits each consumer
    key's rate limit over them (gateway/consumers.py ``shares``)."""
    os.environ["MODELPORT_WEB_WORKERS"] = str(server.cfg.workers)


def child_exit(server, worker):
    """A worker exited (or was recycled after max_requests): its counts join the folder's
    archive, so /metrics keeps them without reading one more file per dead worker
    (prometheus-client's multiprocess mode, core/prom_files.py)."""
    compact(worker.pid)
