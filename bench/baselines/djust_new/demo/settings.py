"""A project shaped like `python -m djust new demo` (djust 1.2.6) writes it.

The baseline for bench/run.py: one process, djust's default memory state
backend, the in-memory channel layer, SQLite, no Redis, no proxy settings.
Differences from the scaffold, each needed to measure it at all:
- DEBUG defaults to False (as the scaffold's settings do without its .env), so
  both projects are measured with the same Django code paths;
- the counter view and template are the template's own (core.views.CounterView
  is `demo.views.CounterView` here), so both render the same page;
- djust's per-IP WebSocket cap (10 per process) is raised, because every load
  session comes from 127.0.0.1.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "bench-baseline-not-a-secret-" + "x" * 40)
DEBUG = os.environ.get("DEBUG", "False").lower() in ("true", "1", "yes")
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",")]

INSTALLED_APPS = [
    "channels",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "djust",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "demo.urls"

TEMPLATES = [
    {
        "BACKEND": "djust.template_backend.DjustTemplateBackend",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "demo.asgi.application"

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJUST_SQLITE_PATH") or (BASE_DIR / "db.sqlite3"),
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LIVEVIEW_ALLOWED_MODULES = ["demo.views", "djust"]

# Not in the scaffold: see the module docstring.
LIVEVIEW_CONFIG = {"rate_limit": {"max_connections_per_ip": 100000}}
DJUST_CONFIG = {"update_check": False}
