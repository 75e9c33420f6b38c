"""Local development: one process, no servers needed (SQLite, in-memory state)."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS

DEBUG = True

# Daphne's runserver speaks ASGI, so `manage.py runserver` serves the
# LiveView WebSocket too; production uses bin/serve instead.
INSTALLED_APPS = ["daphne", *INSTALLED_APPS]

# Memory state backend, in-memory channel layer and local-memory cache come
# from base.py: they only work inside one process, which is what dev runs.
