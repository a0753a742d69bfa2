"""Settings shared by every environment.

Read the environment here (through ``env``) and nowhere else.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured
from whitenoise.compress import Compressor

from config import embedded_broker

from .env import (
    env_bool,
    env_choice,
    env_combinations,
    env_float,
    env_group_map,
    env_int,
    env_list,
    env_path,
    env_pattern,
    env_port_range,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
MODELPORT_VERSION = "0.1.0"

# --- Data directory -------------------------------------------------------------------------
MODELPORT_DATA_DIR = env_path("MODELPORT_DATA_DIR", BASE_DIR / "var")


def _private_dir(path: Path) -> Path:
    """The data dir, created 0700 when missing (`make run` also makes an existing one 0700 and
    runs every process with umask 077); an existing directory's mode is the operator's."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700, exist_ok=True)
    return path


def _persistent_secret_key(data_dir: Path) -> str:
    """A per-install key kept under the data dir, so `make run` needs no configuration. Written
    to a 0600 temporary file and linked into place: never readable by others, never seen
    half-written by a process starting at the same time."""
    path = data_dir / "secret_key"
    if not path.exists():
        _private_dir(data_dir)
        fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=".secret_key-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(50))
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process of this start-up linked its key first: use that one
        finally:
            os.unlink(temporary)
    return path.read_text().strip()


SECRET_KEY = env_str("DJANGO_SECRET_KEY", "") or _persistent_secret_key(MODELPORT_DATA_DIR)
# Off unless asked for (DJANGO_DEBUG=1): the debug page shows settings, source and request data.
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "frontend",  # before the admin: its admin/base_site.html themes the console
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from this site (static files)
    "axes",
    "csp",
    "teams",
    "notifications",
    "quotas",
    "compute",
    "registry",
    "workers",
    "deployments",
    "jobs",
    "monitoring",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",  # outside the gateway: every response gets the policy
    "teams.middleware.SsoFormActionMiddleware",  # the IdP's origin in form-action (Log out)
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "core.middleware.RequestContextMiddleware",
    "core.middleware.ApiRequestGuardMiddleware",
    "gateway.middleware.GatewayMiddleware",  # /serve/…/invocations: skips what follows
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.DomainErrorMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a flagged sign-in into the lockout answer
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "frontend.context_processors.portal",
            ],
        },
    },
]

# --- Database: PostgreSQL when DATABASE_URL is set, else SQLite under the data dir ----------
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60,
                                                  conn_health_checks=True)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(MODELPORT_DATA_DIR / "modelport.sqlite3"),
            "OPTIONS": {
                # WAL + a busy timeout let web, worker and beat share the file.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = _private_dir(MODELPORT_DATA_DIR) / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                "OPTIONS": {"location": str(MODELPORT_DATA_DIR / "media")}},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# Source maps (6 MB of them with Swagger UI and ReDoc) are for a developer's browser tools only:
# collectstatic does not spend a minute compressing them.
WHITENOISE_SKIP_COMPRESS_EXTENSIONS = (*Compressor.SKIP_COMPRESS_EXTENSIONS, "map")
# Stored files (artifacts, uploads) get the process's umask — 0600 under `make run` — instead of
# Django's fixed 0644.
FILE_UPLOAD_PERMISSIONS = None

# The portal's 403 page (config/error_views.py) instead of Django's CSRF failure page.
CSRF_FAILURE_VIEW = "config.error_views.csrf_failure"

# --- Content-Security-Policy (django-csp) on every response -----------------------------------
# Scripts and styles come from this origin only: no inline <script>, style="" or on*=
# attributes (a template that really needs one gives it {{ request.csp_nonce }}). The API docs
# pages run under it too (config/api_docs.py; ReDoc alone adds inline styles and a blob: worker).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", NONCE],
        "style-src": ["'self'", NONCE],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Sign-in brute-force protection (django-axes): portal, console and HTTP Basic -------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses a locked-out username/IP before the check
    "django.contrib.auth.backends.ModelBackend",
    # OpenID Connect (below); answers only a provider's callback, and nothing while SSO is off.
    "teams.oidc.ModelportOIDCBackend",
]
# After this many failed sign-ins within the cool-off window, that username from that IP is
# refused (portal: a message; API: 429 with Retry-After) until the window has passed.
AXES_FAILURE_LIMIT = env_int("MODELPORT_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("MODELPORT_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
# What is locked: by default a username from one IP address, so a guesser elsewhere cannot
# lock a colleague out. Alternatives are comma-separated (e.g. "username+ip_address,ip_address").
AXES_LOCKOUT_PARAMETERS = env_combinations("MODELPORT_LOGIN_LOCKOUT_BY", ["username+ip_address"],
                                           ("username", "ip_address", "user_agent"))
# A refused attempt during the lockout does not extend it: Retry-After stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_ENABLE_ACCESS_FAILURE_LOG = True  # each failure, for the console (Axes → Access failures)
AXES_CLIENT_IP_CALLABLE = "core.middleware.client_ip"  # the edge's X-Forwarded-For on a socket
AXES_LOCKOUT_CALLABLE = "teams.lockout.lockout_response"
AXES_WHITELIST_CALLABLE = "teams.lockout.not_a_password_attempt"  # SSO callbacks: no password
AXES_VERBOSE = False

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "frontend:dashboard"
LOGOUT_REDIRECT_URL = "login"

# --- Single sign-on: OpenID Connect (mozilla-django-oidc; teams/sso.py, teams/oidc.py) -------
# Off while MODELPORT_OIDC_ISSUER is empty. The endpoints come from the issuer's
# /.well-known/openid-configuration, read at first use and cached (teams.sso.discovery).
MODELPORT_OIDC_ISSUER = env_str("MODELPORT_OIDC_ISSUER", "").rstrip("/")
MODELPORT_OIDC_PROVIDER_NAME = env_str("MODELPORT_OIDC_PROVIDER_NAME", "single sign-on")
MODELPORT_OIDC_GROUPS_CLAIM = env_str("MODELPORT_OIDC_GROUPS_CLAIM", "groups")
MODELPORT_OIDC_ADMIN_GROUPS = env_list("MODELPORT_OIDC_ADMIN_GROUPS", [])
# IdP group → team slug and role: "ml-search:maintainer=search/maintainer,ml-all=search/viewer".
MODELPORT_OIDC_GROUP_MAP = env_group_map("MODELPORT_OIDC_GROUP_MAP",
                                         ("viewer", "engineer", "maintainer"))
# A first SSO login may take over an existing local account with the same, provider-verified
# email address (off: a new account is made; matching is by the provider's `sub` afterwards).
MODELPORT_OIDC_LINK_BY_EMAIL = env_bool("MODELPORT_OIDC_LINK_BY_EMAIL", False)
MODELPORT_OIDC_DISCOVERY_TTL_S = env_int("MODELPORT_OIDC_DISCOVERY_TTL_S", 3600, minimum=0)
OIDC_RP_CLIENT_ID = env_str("MODELPORT_OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = env_str("MODELPORT_OIDC_CLIENT_SECRET", "")
OIDC_RP_SCOPES = env_str("MODELPORT_OIDC_SCOPES", "openid email profile groups")
OIDC_RP_SIGN_ALGO = env_str("MODELPORT_OIDC_SIGN_ALGO", "RS256")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_STORE_ID_TOKEN = True  # the id_token_hint of RP-initiated logout
OIDC_TIMEOUT = env_int("MODELPORT_OIDC_TIMEOUT_S", 10, minimum=1)
OIDC_OP_LOGOUT_URL_METHOD = "teams.oidc.provider_logout_url"
LOGIN_REDIRECT_URL_FAILURE = "login"
# Who may sign in with a password (portal form, console, HTTP Basic on POST /api/v1/tokens/):
# all (default), admins (platform admins and superusers only: break-glass), off.
MODELPORT_PASSWORD_LOGIN = env_choice("MODELPORT_PASSWORD_LOGIN", "all", ("all", "admins", "off"))
if MODELPORT_OIDC_ISSUER and not (OIDC_RP_CLIENT_ID and OIDC_RP_CLIENT_SECRET):
    raise ImproperlyConfigured("MODELPORT_OIDC_ISSUER is set: also set MODELPORT_OIDC_CLIENT_ID "
                               "and MODELPORT_OIDC_CLIENT_SECRET.")
if MODELPORT_PASSWORD_LOGIN == "off" and not MODELPORT_OIDC_ISSUER:
    raise ImproperlyConfigured("MODELPORT_PASSWORD_LOGIN=off needs single sign-on "
                               "(MODELPORT_OIDC_ISSUER): nobody could sign in.")

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "teams.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "core.rest.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "core.rest.FilterBackend",
        "rest_framework.filters.SearchFilter",
    ],
    # JSON in and out (uploads declare their multipart parser on their own views).
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "core.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.rest.exception_handler",
    "DEFAULT_METADATA_CLASS": "core.metadata.Metadata",
    "DEFAULT_THROTTLE_RATES": {"token_create": env_str("MODELPORT_TOKEN_CREATE_RATE", "30/min")},
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Modelport API",
    "DESCRIPTION": "Register models, request capacity, deploy and monitor them.",
    "VERSION": "v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI (/api/v1/docs/) and ReDoc (/api/v1/redoc/) from drf-spectacular-sidecar's static
    # files: the pages work without internet and the CSP needs no outside origin.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No deep links: Swagger UI puts each operation's link inside the button that opens it
    # (axe-core's nested-interactive, a serious violation, on every operation).
    "SWAGGER_UI_SETTINGS": {"deepLinking": False},
    "ENUM_NAME_OVERRIDES": {
        "VersionStatusEnum": "registry.models.VersionStatus",
        "TransitionStatusEnum": "registry.models.TransitionStatus",
        "ResourceRequestStatusEnum": "quotas.models.RequestStatus",
        "TargetKindEnum": "compute.models.TargetKind",
        "JobStatusEnum": "jobs.models.JobStatus",
        "JobChunkStatusEnum": "jobs.models.ChunkStatus",
        # Two fields named metric: the alert rules' and autoscaling's.
        "MetricEnum": "monitoring.alerts.METRICS",
        "ScaleMetricEnum": "deployments.spec.SCALE_METRICS",
        "ConsumerKeyStatusEnum": "deployments.consumer_keys.KEY_STATUSES",
    },
}

# --- Celery: Redis at REDIS_URL, else the embedded Redis server `make run` starts ------------
# (config/embedded_broker.py: on a unix socket in the data dir, its append-only file there too).
REDIS_URL = env_str("REDIS_URL", "")
CELERY_EMBEDDED_BROKER = not REDIS_URL
CELERY_BROKER_URL = REDIS_URL or embedded_broker.broker_url(MODELPORT_DATA_DIR)
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {"visibility_timeout": 3600}
# Processes start together with the broker (and it may be restarted under them): keep trying.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("MODELPORT_TASK_SOFT_TIME_LIMIT", 600, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("MODELPORT_TASK_TIME_LIMIT", 660, minimum=1)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = False
# Reconciling deployments never waits behind long work (image builds, model validation):
# its own queue, consumed by its own worker process (Procfile "reconciler").
# The controllers' queue (the Procfile's reconciler): short, level-triggered passes of
# deployments and batch jobs, never behind an image build or a validation on the worker.
# A wake from zero has a request waiting on it, and the scaler's look is short: both go to the
# general workers rather than wait behind the reconciler queue's long passes (drains, builds).
CELERY_TASK_ROUTES = {"deployments.tasks.wake": {"queue": "celery"},
                      "deployments.tasks.autoscale_all": {"queue": "celery"},
                      "deployments.tasks.*": {"queue": "deployments"},
                      "jobs.tasks.*": {"queue": "deployments"}}
CELERY_BEAT_SCHEDULE_FILENAME = str(MODELPORT_DATA_DIR / "celerybeat-schedule")
_HEARTBEAT = timedelta(seconds=env_int("MODELPORT_HEARTBEAT_SECONDS", 15, minimum=1))
CELERY_BEAT_SCHEDULE = {
    # One heartbeat per queue, so the dashboard shows that each kind of worker consumes.
    "worker-heartbeat": {"task": "workers.tasks.heartbeat", "schedule": _HEARTBEAT},
    "reconciler-heartbeat": {"task": "workers.tasks.heartbeat", "schedule": _HEARTBEAT,
                             "options": {"queue": "deployments"}},
    "quotas-expire-grants": {
        "task": "quotas.tasks.expire_grants",
        "schedule": timedelta(seconds=env_int("MODELPORT_GRANT_EXPIRY_SECONDS", 60, minimum=1)),
    },
    "quotas-usage-drift": {
        "task": "quotas.tasks.check_usage_drift",
        "schedule": crontab(hour=env_int("MODELPORT_DRIFT_CHECK_HOUR", 3, minimum=0, maximum=23),
                            minute=30),
    },
}
CELERY_TIMEZONE = "UTC"

# --- Tokens -----------------------------------------------------------------------------------
MODELPORT_TOKEN_DEFAULT_DAYS = env_int("MODELPORT_TOKEN_DEFAULT_DAYS", 90, minimum=1)
MODELPORT_TOKEN_MAX_DAYS = env_int("MODELPORT_TOKEN_MAX_DAYS", 365, minimum=1)

# --- Quotas: what a team gets before anyone asks for more ---------------------------------------
MODELPORT_DEFAULT_QUOTA_CPU = env_float("MODELPORT_DEFAULT_QUOTA_CPU", 8, minimum=0)
MODELPORT_DEFAULT_QUOTA_MEMORY_MB = env_int("MODELPORT_DEFAULT_QUOTA_MEMORY_MB", 16384, minimum=0)
MODELPORT_DEFAULT_QUOTA_GPUS = env_int("MODELPORT_DEFAULT_QUOTA_GPUS", 0, minimum=0)
MODELPORT_DEFAULT_QUOTA_DEPLOYMENTS = env_int("MODELPORT_DEFAULT_QUOTA_DEPLOYMENTS", 5, minimum=0)
# Where people reach the portal; links in notification emails start with it.
MODELPORT_BASE_URL = env_str("MODELPORT_BASE_URL", "http://127.0.0.1:8000")

# --- Runtimes (workers/runtimes) ------------------------------------------------------------
MODELPORT_RUNTIME = env_choice("MODELPORT_RUNTIME", "auto", ("auto", "docker", "local"))
# "none": replicas have no network and serve on a socket file under the data dir that only the
# platform reaches (docs/security.md); "host": loopback ports (replicas then need their key);
# any other value: that named network.
MODELPORT_DOCKER_NETWORK = env_str("MODELPORT_DOCKER_NETWORK", "none")
# Where a deployment that a platform admin granted egress runs instead: "host" (on an engine
# without a bridge) or a bridge network's name. It still serves only on its socket.
MODELPORT_DOCKER_EGRESS_NETWORK = env_str("MODELPORT_DOCKER_EGRESS_NETWORK", "host")
# With a named (bridge) network: also publish each replica's port on this host address (e.g.
# 127.0.0.1) and call it there, for a platform that runs on the host rather than on the network.
MODELPORT_DOCKER_PUBLISH_HOST = env_str("MODELPORT_DOCKER_PUBLISH_HOST", "")
MODELPORT_PORT_RANGE = env_port_range("MODELPORT_PORT_RANGE", (20000, 20999))
# The execution target (by name) deployments run on unless they name one; empty: the target
# flagged default (the migration creates "default": this machine's Docker, as configured above).
MODELPORT_DEFAULT_TARGET = env_str("MODELPORT_DEFAULT_TARGET", "")
MODELPORT_SERVING_BASE_IMAGE = env_str("MODELPORT_SERVING_BASE_IMAGE", "modelport/base:bookworm")

# --- Several plain Docker hosts (docs/beyond-one-host.md) ------------------------------------
# Set on a host worker only: the Celery worker started on each Docker host of a multi-host
# docker target ("placement": "hosts"). It consumes MODELPORT_HOST_QUEUE (host.<name>), starts
# and removes that host's replicas on its local Docker Engine, and registers the host (CPU,
# memory, GPUs from `docker info`) in the capacity registry. Empty everywhere else.
MODELPORT_HOST_NAME = env_pattern(
    "MODELPORT_HOST_NAME", "", r"[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?",
    "use 1-63 lowercase letters, digits, dots and hyphens (it names the host's queue and "
    "its containers)")
MODELPORT_HOST_QUEUE = env_str("MODELPORT_HOST_QUEUE",
                               f"host.{MODELPORT_HOST_NAME}" if MODELPORT_HOST_NAME else "")
# The multi-host docker target this host serves (empty: the first such target).
MODELPORT_HOST_TARGET = env_str("MODELPORT_HOST_TARGET", "")
# The address this host's replicas bind to and are called at by the gateway and reconciler.
MODELPORT_HOST_ADDRESS = env_str("MODELPORT_HOST_ADDRESS", "127.0.0.1")
# GPUs of this host as device_id=model (e.g. "0=A100-80GB,1=A100-80GB"), added to those the
# engine advertises as generic resources in `docker info`.
MODELPORT_HOST_GPUS = env_list("MODELPORT_HOST_GPUS", [])
# Beat asks every host worker for a heartbeat this often; a host silent for LOST_SECONDS is
# lost: its replicas are marked lost and rescheduled on other hosts.
MODELPORT_HOST_HEARTBEAT_SECONDS = env_int("MODELPORT_HOST_HEARTBEAT_SECONDS", 15, minimum=1)
MODELPORT_HOST_LOST_SECONDS = env_float("MODELPORT_HOST_LOST_SECONDS", 60, minimum=1)
# How long one reconcile waits for a host worker to start a replica (an image build included)
# before leaving it to the next pass; below the task soft time limit.
MODELPORT_HOST_START_TIMEOUT_S = env_int("MODELPORT_HOST_START_TIMEOUT_S", 300, minimum=1)
# Where a host worker gets the model files of the replicas it starts (docs/beyond-one-host.md,
# "How a host gets a model"): "fetch" downloads each version's artifact from the platform
# (MODELPORT_PLATFORM_URL, authenticated by the host's token, SHA-256 checked) into a cache on
# this host; "shared" unpacks from the platform's artifact storage, for hosts that mount the
# platform's data dir (NFS).
MODELPORT_HOST_MODEL_SOURCE = env_choice("MODELPORT_HOST_MODEL_SOURCE", "fetch",
                                         ("fetch", "shared"))
# The platform's address as this host reaches it; empty: MODELPORT_BASE_URL.
MODELPORT_PLATFORM_URL = env_str("MODELPORT_PLATFORM_URL", "")
# The host's model cache; empty: <MODELPORT_DATA_DIR>/host-cache/models. Above CACHE_MB,
# models no replica on the host uses are removed, least recently used first.
MODELPORT_HOST_CACHE_DIR = env_str("MODELPORT_HOST_CACHE_DIR", "")
MODELPORT_HOST_CACHE_MB = env_int("MODELPORT_HOST_CACHE_MB", 20480, minimum=0)
# A model download fails when the platform sends nothing for this long.
MODELPORT_HOST_FETCH_TIMEOUT_S = env_int("MODELPORT_HOST_FETCH_TIMEOUT_S", 60, minimum=1)
# Where serving images go for targets whose engines are elsewhere (several plain Docker hosts,
# a Swarm): host[:port][/prefix] of a registry the operators run (docs/beyond-one-host.md "How
# images reach hosts"). The platform's worker builds each image once and pushes it there; hosts
# and nodes pull it. A target's own "registry" setting wins; empty: each host builds itself.
MODELPORT_IMAGE_REGISTRY = env_str("MODELPORT_IMAGE_REGISTRY", "")
# Credentials for that registry when the worker's Docker config (`docker login`) has none.
MODELPORT_IMAGE_REGISTRY_USERNAME = env_str("MODELPORT_IMAGE_REGISTRY_USERNAME", "")
MODELPORT_IMAGE_REGISTRY_PASSWORD = env_str("MODELPORT_IMAGE_REGISTRY_PASSWORD", "")
CELERY_BEAT_SCHEDULE["hosts-check"] = {
    "task": "workers.tasks.check_hosts",
    "schedule": timedelta(seconds=MODELPORT_HOST_HEARTBEAT_SECONDS),
}

# --- Registry ---------------------------------------------------------------------------------
MODELPORT_PROTECTED_ALIASES = env_list("MODELPORT_PROTECTED_ALIASES", ["production"])
MODELPORT_ARCHIVE_MAX_MEMBERS = env_int("MODELPORT_ARCHIVE_MAX_MEMBERS", 2000, minimum=1)
MODELPORT_ARCHIVE_MAX_MB = env_int("MODELPORT_ARCHIVE_MAX_MB", 2048, minimum=1)
# An archive expanding more than this many times its own size (past 64 MB) is refused as a
# decompression bomb before it is inflated (registry/archives.py).
MODELPORT_ARCHIVE_MAX_RATIO = env_int("MODELPORT_ARCHIVE_MAX_RATIO", 100, minimum=1)
# Reference data (the drift baseline) with more columns is refused in the request, from its
# CSV header line or Parquet footer; it is parsed and profiled by a worker (registry/reference.py).
MODELPORT_REFERENCE_MAX_COLUMNS = env_int("MODELPORT_REFERENCE_MAX_COLUMNS", 2000, minimum=1)
MODELPORT_SANDBOX_TIMEOUT_S = env_int("MODELPORT_SANDBOX_TIMEOUT_S", 300, minimum=5)
# A version that fails validation keeps its staged upload this many days, so that Retry can
# validate it again (after the platform's packages or sandbox were fixed); then it is removed.
MODELPORT_FAILED_UPLOAD_KEEP_DAYS = env_int("MODELPORT_FAILED_UPLOAD_KEEP_DAYS", 7, minimum=0)
CELERY_BEAT_SCHEDULE["registry-prune-staging"] = {
    "task": "registry.tasks.prune_staging",
    "schedule": timedelta(hours=1),
}
MODELPORT_SANDBOX_MEMORY_MB = env_int("MODELPORT_SANDBOX_MEMORY_MB", 2048, minimum=128)
MODELPORT_SANDBOX_CPUS = env_float("MODELPORT_SANDBOX_CPUS", 1.0, minimum=0.1)
# A version keeps the last this-many lines of its validation log (image build, sandbox output).
MODELPORT_VERSION_LOG_LINES = env_int("MODELPORT_VERSION_LOG_LINES", 5000, minimum=100)
_ARTIFACT_BACKEND = env_str("MODELPORT_ARTIFACT_STORAGE",
                            "django.core.files.storage.FileSystemStorage")
STORAGES["artifacts"] = {
    "BACKEND": _ARTIFACT_BACKEND,
    # Other backends (e.g. django-storages' S3Storage) take their options from their own settings.
    "OPTIONS": ({"location": str(MODELPORT_DATA_DIR / "artifacts")}
                if _ARTIFACT_BACKEND.endswith("FileSystemStorage") else {}),
}

# --- MLflow -----------------------------------------------------------------------------------
# The tracking server listens where only the platform reaches it — a unix socket in a 0700
# directory under `make run` (the Procfile's mlflow line), an internal address in compose and
# Kubernetes — and stock clients log through the portal's authenticated route /mlflow
# (registry/mlflow_route.py) with MLFLOW_TRACKING_TOKEN=<API token>.
MODELPORT_MLFLOW_UPSTREAM = env_pattern(
    "MODELPORT_MLFLOW_UPSTREAM", f"unix:{MODELPORT_DATA_DIR / 'run' / 'mlflow' / 'mlflow.sock'}",
    r"unix:/\S+|https?://[^/\s]+(/\S*)?",
    "use unix:/absolute/path/mlflow.sock or http://host:port (the server's internal address)")
# A tracking-server address for clients that expect one of their own: the edge serves the same
# authenticated route on this loopback port too (gateway/mlflow_port.py); 0: not served.
MLFLOW_PORT = env_int("MLFLOW_PORT", 0, minimum=0, maximum=65535)
# No periodic MLflow sync: the platform answers MLflow's Model Registry API itself
# (registry/mlflow_registry_api/); `manage.py import_mlflow_registry` imports, once, versions
# registered in the tracking server's own registry before that.

# --- Deployments (desired state, reconciler, gateway) -----------------------------------------
MODELPORT_RECONCILE_SECONDS = env_int("MODELPORT_RECONCILE_SECONDS", 10, minimum=1)
MODELPORT_READY_TIMEOUT_S = env_int("MODELPORT_READY_TIMEOUT_S", 180, minimum=1)
MODELPORT_DRAIN_SECONDS = env_float("MODELPORT_DRAIN_SECONDS", 3, minimum=0)
# Replicas being removed get SIGTERM and this long to ship their last prediction logs.
MODELPORT_STOP_TIMEOUT_S = env_float("MODELPORT_STOP_TIMEOUT_S", 5, minimum=0)
# The edge (config/edge.py): the front door on PORT that answers /serve/ itself and streams
# everything else to the Django web server at MODELPORT_WEB_UPSTREAM (unix:/path or http://...).
MODELPORT_EDGE_HOST = env_str("MODELPORT_EDGE_HOST", "127.0.0.1")
MODELPORT_EDGE_PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
MODELPORT_EDGE_WORKERS = env_int("MODELPORT_EDGE_WORKERS", 1, minimum=1, maximum=64)
MODELPORT_WEB_UPSTREAM = env_str("MODELPORT_WEB_UPSTREAM", "")
# Replicas without a network ship their prediction logs to this socket, which the edge serves
# (only POST /api/v1/ingest/predictions/); its directory is mounted read-only into replicas.
# Empty: <MODELPORT_DATA_DIR>/run/ingest/ingest.sock (workers.factory.ingest_socket).
MODELPORT_INGEST_SOCKET = env_str("MODELPORT_INGEST_SOCKET", "")
MODELPORT_GATEWAY_TIMEOUT_S = env_float("MODELPORT_GATEWAY_TIMEOUT_S", 60, minimum=0.1)
# A replica address whose connect failed (timeout, unreachable, refused) is not picked by that
# gateway process for this long, then tried again (gateway/ejection.py); 0 turns ejection off.
MODELPORT_GATEWAY_EJECT_S = env_float("MODELPORT_GATEWAY_EJECT_S", 5, minimum=0)
# How long a gateway process trusts a token check (memberships, deactivation); revocations are
# picked up within about a second regardless.
MODELPORT_GATEWAY_AUTH_TTL_S = env_float("MODELPORT_GATEWAY_AUTH_TTL_S", 5, minimum=0)
# How many gateway processes share one consumer key's rate limit (each enforces 1/N of its rate
# and burst, gateway/consumers.py). 0: the edge's worker count (MODELPORT_EDGE_WORKERS) at the
# edge, gunicorn's worker count on the Django path. Set the total when several edge or web
# containers serve one installation.
MODELPORT_GATEWAY_PROCESSES = env_int("MODELPORT_GATEWAY_PROCESSES", 0, minimum=0)
MODELPORT_CRASH_LOOP_RESTARTS = env_int("MODELPORT_CRASH_LOOP_RESTARTS", 3, minimum=1)
# Canary: roll back when the new revision's error rate exceeds the old one's by this much, or its
# p95 latency is this many times the old one's (once it has served MIN_REQUESTS).
MODELPORT_CANARY_MAX_ERROR_RATE_DELTA = env_float("MODELPORT_CANARY_MAX_ERROR_RATE_DELTA", 0.05,
                                                  minimum=0)
MODELPORT_CANARY_MAX_P95_RATIO = env_float("MODELPORT_CANARY_MAX_P95_RATIO", 2.0, minimum=1)
MODELPORT_CANARY_MIN_REQUESTS = env_int("MODELPORT_CANARY_MIN_REQUESTS", 20, minimum=1)
# A revision that failed for a transient cause (the image missing, the runtime not answering, a
# live replica not ready in time) is retried automatically: after BACKOFF_S, doubling up to
# BACKOFF_MAX_S, at most MAX_ATTEMPTS times (0: never); then it waits for a user's Retry.
MODELPORT_RETRY_MAX_ATTEMPTS = env_int("MODELPORT_RETRY_MAX_ATTEMPTS", 6, minimum=0)
MODELPORT_RETRY_BACKOFF_S = env_float("MODELPORT_RETRY_BACKOFF_S", 10, minimum=0)
MODELPORT_RETRY_BACKOFF_MAX_S = env_float("MODELPORT_RETRY_BACKOFF_MAX_S", 300, minimum=0)
CELERY_BEAT_SCHEDULE["deployments-reconcile-all"] = {
    "task": "deployments.tasks.reconcile_all",
    "schedule": timedelta(seconds=MODELPORT_RECONCILE_SECONDS),
}
# --- Autoscaling (deployments/autoscale.py) ---------------------------------------------------
# Beat looks at every autoscaled deployment this often; the load it judges is the gateways'
# counts over the last WINDOW_S (requests answered, time in flight) or the replicas' CPU. A
# request to a deployment scaled to zero waits at the edge while it wakes: at most
# WAKE_QUEUE requests per deployment and edge process, each at most WAKE_TIMEOUT_S, then 503
# with Retry-After.
MODELPORT_AUTOSCALE_SECONDS = env_float("MODELPORT_AUTOSCALE_SECONDS", 2, minimum=0.5)
MODELPORT_AUTOSCALE_WINDOW_S = env_float("MODELPORT_AUTOSCALE_WINDOW_S", 10, minimum=1)
MODELPORT_WAKE_QUEUE = env_int("MODELPORT_WAKE_QUEUE", 256, minimum=1)
MODELPORT_WAKE_TIMEOUT_S = env_float("MODELPORT_WAKE_TIMEOUT_S", 30, minimum=1)
CELERY_BEAT_SCHEDULE["deployments-autoscale"] = {
    "task": "deployments.tasks.autoscale_all",
    "schedule": timedelta(seconds=MODELPORT_AUTOSCALE_SECONDS),
}
# --- Batch scoring jobs (jobs/) ----------------------------------------------------------------
# An uploaded or referenced input is refused over this size; it is staged as Parquet whose row
# groups (chunks) hold JOB_CHUNK_ROWS rows, at most 1,000,000 (fewer when rows / parallelism is
# less, so each container gets one share; each chunk pays a container start and a model load,
# ~2 s, so chunks are large and a container streams its chunk in sub-batches); a team
# runs at most TEAM_MAX_RUNNING_JOBS jobs at once (the rest stay queued); a failed chunk is
# retried JOB_MAX_RETRIES times by default. Beat ticks every unfinished job every
# JOB_RECONCILE_SECONDS (jobs/runner: one short step per tick); a running job's own ticks
# follow each other every JOB_FOLLOW_SECONDS.
MODELPORT_JOB_MAX_INPUT_MB = env_int("MODELPORT_JOB_MAX_INPUT_MB", 512, minimum=1)
MODELPORT_JOB_CHUNK_ROWS = env_int("MODELPORT_JOB_CHUNK_ROWS", 1_000_000, minimum=1,
                                   maximum=1_000_000)
MODELPORT_TEAM_MAX_RUNNING_JOBS = env_int("MODELPORT_TEAM_MAX_RUNNING_JOBS", 2, minimum=1)
MODELPORT_JOB_MAX_RETRIES = env_int("MODELPORT_JOB_MAX_RETRIES", 2, minimum=0)
MODELPORT_JOB_RECONCILE_SECONDS = env_int("MODELPORT_JOB_RECONCILE_SECONDS", 3, minimum=1)
# A running job's next tick comes this soon after the last (jobs/passes.py: follow_up).
MODELPORT_JOB_FOLLOW_SECONDS = env_float("MODELPORT_JOB_FOLLOW_SECONDS", 1.0, minimum=0.1)
CELERY_BEAT_SCHEDULE["jobs-reconcile-all"] = {
    "task": "jobs.tasks.reconcile_all",
    "schedule": timedelta(seconds=MODELPORT_JOB_RECONCILE_SECONDS),
}
# This installation's replicas its database no longer knows (deleted deployments, replicas left
# on the other runtime) are removed this often (deployments/orphans.py): it lists every target.
MODELPORT_ORPHAN_SWEEP_SECONDS = env_int("MODELPORT_ORPHAN_SWEEP_SECONDS", 60, minimum=5)
CELERY_BEAT_SCHEDULE["deployments-orphan-sweep"] = {
    "task": "deployments.tasks.sweep_orphans",
    "schedule": timedelta(seconds=MODELPORT_ORPHAN_SWEEP_SECONDS),
}

# --- Job schedules (jobs/schedules.py): due cron schedules start their job each minute ------
CELERY_IMPORTS = ("jobs.schedule_tasks",)
CELERY_BEAT_SCHEDULE["jobs-run-schedules"] = {
    "task": "jobs.schedule_tasks.run_schedules",
    "schedule": crontab(minute="*"),
}

# --- Limits shown to clients (GET /api/v1/info/) --------------------------------------------
MODELPORT_MAX_UPLOAD_MB = env_int("MODELPORT_MAX_UPLOAD_MB", 512, minimum=1)
# Uploaded files are counted as they stream in and stopped at MODELPORT_MAX_UPLOAD_MB (413),
# with or without a Content-Length (core/uploads.py).
FILE_UPLOAD_HANDLERS = [
    "core.uploads.LimitedUploadHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
MODELPORT_MAX_REPLICAS = env_int("MODELPORT_MAX_REPLICAS", 16, minimum=1)
MODELPORT_HEARTBEAT_STALE_SECONDS = env_float("MODELPORT_HEARTBEAT_STALE_SECONDS", 90, minimum=1)

# --- Seeding (manage.py bootstrap) ------------------------------------------------------------
MODELPORT_ADMIN_USERNAME = env_str("MODELPORT_ADMIN_USERNAME", "admin")
MODELPORT_ADMIN_PASSWORD = env_str("MODELPORT_ADMIN_PASSWORD", "")
MODELPORT_ADMIN_EMAIL = env_str("MODELPORT_ADMIN_EMAIL", "admin@localhost")
MODELPORT_DEMO = env_bool("MODELPORT_DEMO", True)
# The demo's deployment (`manage.py seed_demo`); replica container names derive from it, so two
# installations sharing one Docker host (a `make run` and the test suite) need different names.
MODELPORT_DEMO_DEPLOYMENT = env_str("MODELPORT_DEMO_DEPLOYMENT", "iris-classifier")
# Extra demo models of other frameworks (comma-separated: "xgboost"); off by default: each
# builds its own serving image at first start (minutes), and the platform's environment needs
# the framework (requirements/flavors.txt) to train it.
MODELPORT_DEMO_FLAVORS = [f.strip().lower() for f in
                          env_str("MODELPORT_DEMO_FLAVORS", "").split(",") if f.strip()]

EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DJANGO_DEFAULT_FROM_EMAIL", "modelport@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    # httpx logs every request at INFO: the MLflow route would log each client call twice.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "httpx": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"}},
}

# --- Monitoring (prediction-log ingest, rollups, drift, alerts) -------------------------------
# Which drift tests decide a feature's verdict, per feature kind: tests joined by "and" or by
# "or" (numeric: ks, psi, js; categorical: chi2, psi, js). monitoring/stats.py, docs/monitoring.md.
MODELPORT_DRIFT_RULE_NUMERIC = env_pattern(
    "MODELPORT_DRIFT_RULE_NUMERIC", "ks and psi",
    r"(ks|psi|js)( and (ks|psi|js))*|(ks|psi|js)( or (ks|psi|js))*",
    "name ks, psi or js, joined by ' and ' or by ' or '")
MODELPORT_DRIFT_RULE_CATEGORICAL = env_pattern(
    "MODELPORT_DRIFT_RULE_CATEGORICAL", "chi2",
    r"(chi2|psi|js)( and (chi2|psi|js))*|(chi2|psi|js)( or (chi2|psi|js))*",
    "name chi2, psi or js, joined by ' and ' or by ' or '")
# A feature's Jensen-Shannon distance (base 2, 0-1) above this counts as drift where js decides.
MODELPORT_DRIFT_JS_THRESHOLD = env_float("MODELPORT_DRIFT_JS_THRESHOLD", 0.1, minimum=0.0)
MODELPORT_MONITORING_RAW_RETENTION_DAYS = env_int("MODELPORT_MONITORING_RAW_RETENTION_DAYS", 7,
                                                  minimum=1)
MODELPORT_MONITORING_ROLLUP_RETENTION_DAYS = env_int(
    "MODELPORT_MONITORING_ROLLUP_RETENTION_DAYS", 400, minimum=1)
MODELPORT_INGEST_MAX_BYTES = env_int("MODELPORT_INGEST_MAX_BYTES", 16 * 1024 * 1024, minimum=1024)
MODELPORT_INGEST_MAX_RECORDS = env_int("MODELPORT_INGEST_MAX_RECORDS", 10000, minimum=1)
MODELPORT_MONITORING_SHIP_BATCH_SIZE = env_int("MODELPORT_MONITORING_SHIP_BATCH_SIZE", 1000,
                                               minimum=1)
MODELPORT_MONITORING_ROLLUP_SECONDS = env_int("MODELPORT_MONITORING_ROLLUP_SECONDS", 20, minimum=1)
# Records younger than this are left for the next rollup pass (in-flight ingest transactions).
MODELPORT_MONITORING_ROLLUP_DELAY_S = env_float("MODELPORT_MONITORING_ROLLUP_DELAY_S", 5,
                                                minimum=0)
MODELPORT_MONITORING_ALERT_SECONDS = env_int("MODELPORT_MONITORING_ALERT_SECONDS", 60, minimum=1)
# A firing alert nobody acknowledged is notified again this often (minutes; 0: never).
MODELPORT_ALERT_RENOTIFY_MINUTES = env_int("MODELPORT_ALERT_RENOTIFY_MINUTES", 60, minimum=0)
MODELPORT_ALERT_WEBHOOK_TIMEOUT_S = env_float("MODELPORT_ALERT_WEBHOOK_TIMEOUT_S", 5, minimum=0.1)
# When set, GET /metrics requires "Authorization: Bearer <this>" (Prometheus bearer_token).
MODELPORT_METRICS_TOKEN = env_str("MODELPORT_METRICS_TOKEN", "")
# prometheus-client's multiprocess mode: every process that counts (gunicorn workers, the edge,
# Celery workers) writes its values to files under PROMETHEUS_MULTIPROC_DIR, and /metrics adds
# up the files in this directory and in its immediate subdirectories (one per container that
# shares it, each with its own PROMETHEUS_MULTIPROC_DIR). Empty: this process's own counters.
MODELPORT_PROMETHEUS_DIR = (env_str("MODELPORT_PROMETHEUS_DIR", "")
                            or env_str("PROMETHEUS_MULTIPROC_DIR", ""))
CELERY_BEAT_SCHEDULE["monitoring-rollup"] = {
    "task": "monitoring.tasks.rollup",
    "schedule": timedelta(seconds=MODELPORT_MONITORING_ROLLUP_SECONDS),
}
CELERY_BEAT_SCHEDULE["monitoring-evaluate-alerts"] = {
    "task": "monitoring.tasks.evaluate_alerts",
    "schedule": timedelta(seconds=MODELPORT_MONITORING_ALERT_SECONDS),
}
# Per-replica CPU/memory samples for the monitoring page (kept like raw records).
MODELPORT_MONITORING_REPLICA_STATS_SECONDS = env_int("MODELPORT_MONITORING_REPLICA_STATS_SECONDS",
                                                     15, minimum=1)
MODELPORT_MONITORING_REPLICA_STATS_THREADS = env_int("MODELPORT_MONITORING_REPLICA_STATS_THREADS",
                                                     8, minimum=1)
CELERY_BEAT_SCHEDULE["monitoring-replica-stats"] = {
    "task": "monitoring.tasks.collect_replica_stats",
    "schedule": timedelta(seconds=MODELPORT_MONITORING_REPLICA_STATS_SECONDS),
}
CELERY_BEAT_SCHEDULE["monitoring-prune"] = {
    "task": "monitoring.tasks.prune",
    "schedule": timedelta(minutes=env_int("MODELPORT_MONITORING_PRUNE_MINUTES", 60, minimum=1)),
}
