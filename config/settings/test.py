"""pytest: fast hashing, eager Celery (tests that need a real worker start one themselves)."""

from .base import *  # noqa: F403
from .base import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
# Sign-in lockouts (django-axes) stay on, at the production limit: axes keeps its state in the
# database (its default handler), which each test rolls back or flushes — one test's failed
# sign-ins never lock out another's. Nothing here calls authenticate() without a request.
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"].pop("transaction_mode", None)
