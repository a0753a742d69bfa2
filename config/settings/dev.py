"""`make run` on a laptop: the embedded defaults of ``base``, production-safe as they are.

DEBUG stays off (custom error pages, no debug page with settings and source); a developer opts
in with ``DJANGO_DEBUG=1`` (read in ``base``).
"""

from .base import *  # noqa: F403
