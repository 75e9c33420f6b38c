"""Production: several workers on several hosts sharing Redis, behind a TLS proxy.

Every secret comes from the environment; a missing one stops the process at
start with a message that names the variable. Check with:

    DJANGO_SETTINGS_MODULE=config.settings.prod manage.py check --deploy --fail-level WARNING
"""

import dj_database_url
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from config.env import env_bool, env_float, env_int, env_list, env_required, env_str

from .base import *  # noqa: F403
from .base import DJUST_CONFIG

DEBUG = False

# SECURITY WARNING: keep the secret key used in production secret.
SECRET_KEY = env_required(
    "DJANGO_SECRET_KEY",
    "50+ random characters, e.g. from "
    '`python -c "import secrets; print(secrets.token_urlsafe(50))"`',
)

# The public host names. Load-balancer probes by IP address are answered by
# core.middleware.HealthCheckMiddleware before host validation, so this list
# never needs "*", which would also let any Origin open a LiveView socket.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["{{ cookiecutter.domain_name }}"])

# Origins allowed to POST forms; Django 4+ checks the Origin header on HTTPS.
CSRF_TRUSTED_ORIGINS = [f"https://{host.lstrip('.')}" for host in ALLOWED_HOSTS]

# --- Redis: djust state, the channel layer and the cache -----------------------
# The main Redis holds what may be evicted when it is full: the cache, sessions
# (also in the database) and djust's render baselines (rebuilt on reconnect).
REDIS_URL = env_required(
    "REDIS_URL", "the Redis shared by all workers, e.g. redis://:PASSWORD@127.0.0.1:6379/0"
)

# The channel layer and presence: group memberships and queued messages, which
# must never be evicted. channels-redis puts a TTL on every key it writes
# (groups expire after group_expiry, queues after a minute), so under the main
# Redis' volatile-lru they are evictable like a cache entry, and the groups of
# idle sessions are exactly its least recently used keys: a flood of page views
# filling that Redis silently drops every push to them. maxmemory and the
# eviction policy hold per Redis instance, so production gives this its own
# small instance with `maxmemory-policy noeviction` (deploy/systemd/README.md,
# compose.yaml): when that one is full, new sessions fail loudly instead.
# Defaults to REDIS_URL, which is safe only while that Redis never reaches its
# maxmemory (tests/test_redis_memory.py in the template measures both layouts).
CHANNEL_REDIS_URL = env_str("CHANNEL_REDIS_URL", REDIS_URL)

# Short timeouts on request paths so /health/ and pages fail fast when Redis is
# down instead of hanging a worker thread.
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 2.0)


def with_timeouts(url):
    """The URL with REDIS_SOCKET_TIMEOUT in its query string, where djust's clients read it."""
    separator = "&" if "?" in url else "?"
    return (
        f"{url}{separator}socket_timeout={REDIS_SOCKET_TIMEOUT}"
        f"&socket_connect_timeout={REDIS_SOCKET_TIMEOUT}"
    )


DJUST_CONFIG = {
    **DJUST_CONFIG,
    "STATE_BACKEND": "redis",
    "REDIS_URL": with_timeouts(REDIS_URL),
    # Who has a page open, in Redis: with the default (memory) each worker
    # would count only its own visitors. djust keeps a sorted set per page with
    # a TTL of 180 s, refreshed by every mount and client ping. Keys with a TTL
    # are what `volatile-lru` evicts under memory pressure, so presence lives
    # with the channel layer, on the Redis that never evicts (CHANNEL_REDIS_URL).
    "PRESENCE_BACKEND": "redis",
    "PRESENCE_REDIS_URL": with_timeouts(CHANNEL_REDIS_URL),
}

# https://github.com/django/channels_redis
# Each WebSocket consumer waits on Redis with a blocking pop. Traps handled here:
# - redis-py 8 defaults socket_timeout to 5 s, the same as channels-redis' pop
#   timeout, so idle consumers died with TimeoutError after ~5 s: no socket
#   timeout on these connections (the connect timeout still applies).
# - after a Redis restart every pooled connection fails once: retry with a
#   short backoff instead of failing the first sessions to reconnect.
# - the asyncio pool raises instead of waiting when full (100 by default), so
#   hundreds of sessions connecting or closing at once lost group updates and
#   left stale channels in the groups. Each pooled connection is one Redis
#   client: workers x hosts x this must stay under Redis' maxclients (10000).
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": CHANNEL_REDIS_URL,
                    "socket_timeout": None,
                    "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
                    "retry": AsyncRetry(ExponentialBackoff(cap=1, base=0.05), retries=5),
                    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
                    "max_connections": env_int("CHANNEL_LAYER_MAX_CONNECTIONS", 1000),
                }
            ],
            # Group membership expires if a worker dies without discarding it.
            "group_expiry": env_int("DJUST_SESSION_TTL", DJUST_CONFIG["SESSION_TTL"]),
        },
    },
}

CACHES = {
    "default": {
        # Django's RedisCache, counting hits and misses for /metrics (core/cache.py).
        "BACKEND": "core.cache.RedisCache",
        "LOCATION": REDIS_URL,
        # Keeps cache keys apart from djust's ("djust:") and the channel layer's ("asgi").
        "KEY_PREFIX": env_str("DJANGO_CACHE_KEY_PREFIX", "cache"),
        "OPTIONS": {
            # Without it every request opened a Redis connection (config/redis_pool.py).
            "pool_class": "config.redis_pool.ProcessConnectionPool",
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": REDIS_SOCKET_TIMEOUT,
            "retry": Retry(ExponentialBackoff(cap=1, base=0.05), retries=3),
        },
    }
}

# Sessions live in the cache (the main Redis) only. djust creates a session on
# every cookieless page view and saves its view state into it on every GET, so
# writing each one through to the database as well (`cached_db`) cost two
# database writes per first visit and one per later visit: the page took two to
# three times as long (python -m bench.page in the template repository). The
# price: a Redis restart without persistence, a flush or an eviction ends the
# sessions it drops. Those visitors get a new session on their next request,
# signed-in users sign in again, and CSRF tokens keep working (they are in
# their own cookie). DJANGO_SESSIONS_IN_DATABASE=true writes them through again
# (docs/deployment.md, "Sessions").
if env_bool("DJANGO_SESSIONS_IN_DATABASE", False):
    SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
else:
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"

# --- Database -----------------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/databases/#persistent-connections
{%- if cookiecutter.database == "postgresql" %}
DATABASE_URL = env_required("DATABASE_URL", "e.g. postgres://USER:PASSWORD@127.0.0.1:5432/NAME")
{%- else %}
# SQLite keeps the whole database in one file: one host only. On a server it
# lives in /var/lib/<service>, the unit's StateDirectory (deploy/systemd/README.md
# sets DATABASE_URL); the default here suits a local production-like run.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")  # noqa: F405
{%- endif %}
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        # Reuse a connection for a minute instead of opening one per request;
        # health checks drop a connection the database has closed meanwhile.
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Fail fast when Postgres is unreachable rather than hang a worker.
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 3
# django-prometheus' backend for the same database: Django's own, with counts of
# connections, queries, errors and query time for /metrics. It subclasses
# Django's backend and only wraps the cursor, so queries behave the same.
DATABASES["default"]["ENGINE"] = DATABASES["default"]["ENGINE"].replace(
    "django.db.backends.", "django_prometheus.db.backends."
)

# --- Static files -------------------------------------------------------------
# Hashed, compressed copies made by collectstatic; WhiteNoise serves them with
# far-future cache headers (Nginx serves them directly when in front).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- HTTPS behind a proxy -------------------------------------------------------
# https://docs.djangoproject.com/en/5.2/ref/settings/#secure-proxy-ssl-header
# SECURITY WARNING: trust X-Forwarded-Proto only because bin/serve accepts
# proxy headers from FORWARDED_ALLOW_IPS alone and the proxy overwrites it.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# One year, subdomains included, eligible for browser preload lists. Start
# lower (e.g. 3600) on a new domain until HTTPS is known to work everywhere.
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Lax"


{%- if cookiecutter.use_sentry %}

# --- Sentry -------------------------------------------------------------------
# https://docs.sentry.io/platforms/python/integrations/django/
# Off unless SENTRY_DSN is set. No PII: no cookies, user ids, IP addresses or
# request bodies, and settings-like names are scrubbed from stack frames.
SENTRY_DSN = env_str("SENTRY_DSN")
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=env_str("SENTRY_ENVIRONMENT", "production"),
        traces_sample_rate=env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0),
        send_default_pii=False,
        max_request_body_size="never",
        event_scrubber=EventScrubber(
            denylist=[
                *DEFAULT_DENYLIST,
                "secret_key",
                "redis_url",
                "channel_redis_url",
                "database_url",
                "sentry_dsn",
            ],
            recursive=True,
        ),
    )
{%- endif %}
