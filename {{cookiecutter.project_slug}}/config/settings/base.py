"""Settings shared by every environment.

dev.py, test.py and prod.py import everything from here and change only what
differs. Values that vary between deployments come from environment variables
(see the table in README.md and .env.example).

https://docs.djangoproject.com/en/5.2/ref/settings/
"""

from pathlib import Path

from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE

from config.env import env_int, env_list, env_networks, env_str
from config.logging import build_logging, route_warnings_to_logging

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# SECURITY WARNING: keep the secret key used in production secret. Production
# refuses to start without DJANGO_SECRET_KEY; this fallback is for dev and tests.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "django-insecure-dev-only-not-for-production")

DEBUG = False

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1"])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "djust",
    "django_prometheus",
    "core",
]

MIDDLEWARE = [
    # Starts the clock for django-prometheus' request metrics (the After
    # middleware, last, records them by view, method and status). Both run on
    # the event loop, not in a thread: core/request_metrics.py.
    "core.request_metrics.PrometheusBeforeMiddleware",
    # Answers load-balancer probes before host validation and the HTTPS
    # redirect, which would otherwise turn a probe by IP into a 400 or a 301.
    "core.middleware.HealthCheckMiddleware",
    # /metrics for Prometheus, to the monitoring network only (METRICS_ALLOWED_IPS).
    "core.metrics.MetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files (djust's client script included) when
    # DEBUG is off and nothing else serves /static/.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # After CSPMiddleware so it sees the response first: it puts the request's
    # nonce on the inline scripts djust injects, before the CSP header is built.
    "core.middleware.InlineScriptNonceMiddleware",
    # Just before the Prometheus middleware (which stays last), so it is the first of
    # ours to see a view's exception: Redis or the database unreachable becomes a
    # 503 that the proxy retries on another app host.
    "core.middleware.DependencyUnavailableMiddleware",
    "core.request_metrics.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"

# djust renders LiveView templates with its own engine; it must come first
# (djust check C016). The Django engine after it serves any plain templates.
TEMPLATES = [
    {
        "BACKEND": "djust.template_backend.DjustTemplateBackend",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "config.asgi.application"

# Overridden per environment: SQLite in dev and tests, DATABASE_URL in prod.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
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

# https://docs.djangoproject.com/en/5.2/howto/static-files/deployment/
# Run `manage.py collectstatic` after every deploy and every djust upgrade
# (djust check C013): a stale copy of djust's client script breaks every page.
STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))

# --- djust -------------------------------------------------------------------
# https://djust.org/docs: the state backend keeps each LiveView's render
# baseline between events. Memory here; prod.py switches to Redis.
DJUST_CONFIG = {
    "STATE_BACKEND": "memory",
    # Seconds a session's state lives in Redis after its last use.
    "SESSION_TTL": env_int("DJUST_SESSION_TTL", {{ cookiecutter.session_ttl | int }}),
    # No PyPI update check at start: servers have no business phoning out.
    "update_check": False,
    # Who has a page open (djust.presence, the counter's "Pages open"). Memory
    # counts only the visitors of this one process, which is all dev and the
    # tests run; prod.py keeps it in Redis so every worker counts everyone.
    "PRESENCE_BACKEND": "memory",
}

# Modules a WebSocket client may mount a LiveView from.
LIVEVIEW_ALLOWED_MODULES = ["core.views"]

LIVEVIEW_CONFIG = {
    "rate_limit": {
        # djust caps WebSocket connections per client IP in each worker (10 by
        # default; the eleventh is closed with code 4429). Offices and mobile
        # carriers put hundreds of real users behind one address, so the cap is
        # raised here; flood protection belongs at the proxy (nginx limit_conn).
        "max_connections_per_ip": env_int("DJUST_MAX_CONNECTIONS_PER_IP", 1000),
    },
}

# How many proxies in front of the service append to X-Forwarded-For. djust
# takes the client address from that header only with this set; with 0 every
# user behind Nginx would look like 127.0.0.1 and share one per-IP cap.
DJUST_TRUSTED_PROXY_COUNT = env_int("DJUST_TRUSTED_PROXY_COUNT", 1)

# --- Metrics (core/metrics.py, deploy/monitoring/) ---------------------------
# SECURITY WARNING: who may read /metrics (view names, traffic, error rates).
# Prometheus scrapes each app host directly on HOST:PORT; list the addresses
# (or networks, CIDR) it scrapes from. Requests that came through the public
# proxy get 404 whatever their address (core.metrics.scraper_allowed).
METRICS_ALLOWED_IPS = env_networks(
    "METRICS_ALLOWED_IPS",
    ["127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
)

# --- Channels ----------------------------------------------------------------
# One process only: prod.py replaces it with Redis so workers share groups.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Security headers (every environment, so dev shows breakage early) -------
# https://docs.djangoproject.com/en/5.2/ref/middleware/#module-django.middleware.security
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "strict-origin-when-cross-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Content-Security-Policy (django-csp): https://django-csp.readthedocs.io/
# Scripts run only from our origin or with this response's nonce: no
# 'unsafe-inline', no 'unsafe-eval'. djust's inline scripts get the nonce from
# core.middleware.InlineScriptNonceMiddleware. Styles allow 'unsafe-inline':
# djust's client adds <style> elements at run time (loading states), which no
# server-side nonce reaches, and CSS cannot run code. 'self' in connect-src
# covers the same-origin ws:// and wss:// LiveView socket.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# --- Logging -----------------------------------------------------------------
LOGGING = build_logging()
route_warnings_to_logging()
