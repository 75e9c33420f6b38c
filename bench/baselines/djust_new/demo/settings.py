"""The settings `python -m djust new demo` writes (djust 1.2.6), for bench/run.py's baseline.

Checked against the scaffold itself: djust 1.2.6's djust/scaffolding (run as
`python -m djust new demo` from a generated project's .venv). Same apps
(djust.theming included), middleware, template backend and context processors,
in-memory channel layer, SQLite, no Redis, no proxy settings; served as its
Makefile's `make dev` does (uvicorn demo.asgi:application, one process) without
--reload. Differences, each needed to measure it at all:
- DEBUG defaults to False (the scaffold's settings do so without its .env,
  whose DEBUG=True is for development), so both projects run production paths;
- no .env loader: bench passes SECRET_KEY and ALLOWED_HOSTS in the environment;
- the page is the template's counter (demo/views.py), not the scaffold's to-do
  list, so both render the same page; its handler is a plain `def`, as every
  handler the scaffold writes is;
- djust's per-IP WebSocket cap (10 per process) is raised, because every load
  session comes from 127.0.0.1.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "bench-baseline-not-a-secret-" + "x" * 40)
DEBUG = os.environ.get("DEBUG", "False").lower() in ("true", "1", "yes")
ALLOWED_HOSTS = [
    host.strip() for host in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1").split(",") if host.strip()
]

INSTALLED_APPS = [
    "channels",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "djust",
    "djust.theming",
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
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "djust.theming.context_processors.theme_context",
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
