"""`make run` on a laptop: embedded defaults, debug on unless DJANGO_DEBUG=0."""

from .base import *  # noqa: F403
from .env import env_bool

DEBUG = env_bool("DJANGO_DEBUG", True)
