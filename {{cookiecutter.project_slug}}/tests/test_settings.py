"""Production settings load from the environment and refuse to start without secrets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parent.parent

PROD_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.prod",
    "DJANGO_SECRET_KEY": "a-production-like-secret-key-that-is-long-enough-0123456789abcdef",
    "DJANGO_ALLOWED_HOSTS": "app.example.org",
    "REDIS_URL": "redis://:pw@127.0.0.1:6390/0",
    # Any URL will do: loading settings opens no connection.
    "DATABASE_URL": "sqlite:///prod-settings-check.sqlite3",
}

DUMP_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "state_backend": settings.DJUST_CONFIG["STATE_BACKEND"],
    "channel_layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "cache": settings.CACHES["default"]["BACKEND"],
    "session_engine": settings.SESSION_ENGINE,
    "staticfiles": settings.STORAGES["staticfiles"]["BACKEND"],
    "socket_timeout": settings.CHANNEL_LAYERS["default"]
    .get("CONFIG", {"hosts": [{}]})["hosts"][0]
    .get("socket_timeout", "unset"),
    "https": [
        settings.SECURE_SSL_REDIRECT,
        settings.SECURE_HSTS_SECONDS,
        settings.SECURE_HSTS_INCLUDE_SUBDOMAINS,
        settings.SECURE_HSTS_PRELOAD,
        settings.SESSION_COOKIE_SECURE,
        settings.CSRF_COOKIE_SECURE,
        settings.SECURE_PROXY_SSL_HEADER,
    ],
}))
"""


def load_settings(env, code=DUMP_SETTINGS):
    """Run code (by default: print the settings) in a fresh interpreter with this environment."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    clean.pop("REDIS_URL", None)
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prod_settings_use_redis_for_every_shared_backend():
    result = load_settings(PROD_ENV)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {
        "DEBUG": False,
        "state_backend": "redis",
        "channel_layer": "channels_redis.core.RedisChannelLayer",
        # Django's RedisCache, counting hits and misses for /metrics.
        "cache": "core.cache.RedisCache",
        # Sessions in Redis only: no database write on every page view.
        "session_engine": "django.contrib.sessions.backends.cache",
        "staticfiles": "whitenoise.storage.CompressedManifestStaticFilesStorage",
        # Idle WebSocket consumers block on Redis for minutes: no read timeout.
        "socket_timeout": None,
        "https": [True, 31536000, True, True, True, True, ["HTTP_X_FORWARDED_PROTO", "https"]],
    }


WHERE_REDIS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({
    "cache": settings.CACHES["default"]["LOCATION"],
    "state": settings.DJUST_CONFIG["REDIS_URL"].split("?")[0],
    "channel_layer": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"],
    "presence": settings.DJUST_CONFIG["PRESENCE_REDIS_URL"].split("?")[0],
}))
"""


@pytest.mark.parametrize("channel_url", [None, "redis://:pw@127.0.0.1:6380/0"])
def test_channel_layer_and_presence_use_channel_redis_url(channel_url):
    """CHANNEL_REDIS_URL moves only the channel layer and presence; unset, it is REDIS_URL."""
    env = dict(PROD_ENV)
    if channel_url:
        env["CHANNEL_REDIS_URL"] = channel_url
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DJANGO_")}
    for name in ("REDIS_URL", "CHANNEL_REDIS_URL", "DATABASE_URL"):
        clean.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-c", WHERE_REDIS],
        cwd=PROJECT_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    where = json.loads(result.stdout.strip().splitlines()[-1])
    main = PROD_ENV["REDIS_URL"]
    channels = channel_url or main
    assert where == {"cache": main, "state": main, "channel_layer": channels, "presence": channels}


@pytest.mark.parametrize(
    ("value", "engine"),
    [("true", "cached_db"), ("false", "cache"), ("", "cache")],
)
def test_sessions_in_database_writes_them_through_to_the_database(value, engine):
    """DJANGO_SESSIONS_IN_DATABASE=true keeps sessions through a Redis flush (deployment.md)."""
    result = load_settings({**PROD_ENV, "DJANGO_SESSIONS_IN_DATABASE": value})
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["session_engine"] == f"django.contrib.sessions.backends.{engine}"


def test_sessions_in_database_refuses_a_value_that_is_not_a_boolean():
    result = load_settings({**PROD_ENV, "DJANGO_SESSIONS_IN_DATABASE": "sometimes"})
    assert result.returncode != 0
    assert "DJANGO_SESSIONS_IN_DATABASE='sometimes' is not a boolean" in result.stderr


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "REDIS_URL"])
def test_prod_refuses_to_start_without_a_required_secret(missing):
    env = {key: value for key, value in PROD_ENV.items() if key != missing}
    result = load_settings(env)
    assert result.returncode != 0
    assert f"Set the {missing} environment variable" in result.stderr


def test_dev_settings_need_no_server():
    result = load_settings({"DJANGO_SETTINGS_MODULE": "config.settings.dev"})
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["DEBUG"] is True
    assert loaded["state_backend"] == "memory"
    assert loaded["channel_layer"] == "channels.layers.InMemoryChannelLayer"
