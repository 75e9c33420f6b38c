"""Local development: one process, no servers needed (SQLite, in-memory state)."""

import os
import sys

from csp.constants import UNSAFE_INLINE

from config.logging import build_logging

from .base import *  # noqa: F403
from .base import CONTENT_SECURITY_POLICY, INSTALLED_APPS, LIVEVIEW_CONFIG

DEBUG = True

# Daphne's runserver speaks ASGI, so `manage.py runserver` serves the
# LiveView WebSocket too; production uses bin/serve instead.
INSTALLED_APPS = ["daphne", *INSTALLED_APPS]

# Memory state backend, in-memory channel layer and local-memory cache come
# from base.py: they only work inside one process, which is what dev runs.

# People read these logs: one plain line per record, the level coloured on a
# terminal (NO_COLOR turns that off). Production keeps JSON (base.py).
LOGGING = build_logging(readable=True)

# djust starts its hot-reload file watcher (it tells open pages to reload after
# an edit) in every process that loads these settings with DEBUG on: migrate,
# shell, and runserver's autoreloader parent too. Only the process that serves
# pages needs it: runserver's child (RUN_MAIN=true), or runserver --noreload.
SERVES_PAGES = sys.argv[1:2] == ["runserver"] and (
    os.environ.get("RUN_MAIN") == "true" or "--noreload" in sys.argv
)
LIVEVIEW_CONFIG = {**LIVEVIEW_CONFIG, "hot_reload_auto_enable": SERVES_PAGES}

# djust's debug panel (DEBUG only) renders its rows with inline event handlers
# (onclick="window.djustDebugPanel.toggleExpand(this)"), which base.py's policy
# refuses, so the panel's rows never expand. script-src-attr governs only those
# handler attributes: <script> elements still need the nonce. Development only;
# production keeps base.py's policy.
CONTENT_SECURITY_POLICY = {
    **CONTENT_SECURITY_POLICY,
    "DIRECTIVES": {**CONTENT_SECURITY_POLICY["DIRECTIVES"], "script-src-attr": [UNSAFE_INLINE]},
}
