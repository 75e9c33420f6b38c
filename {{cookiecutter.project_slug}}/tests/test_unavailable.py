"""A page that cannot reach Redis or the database answers 503, which the proxy retries elsewhere."""

import logging
import socket
import time

import pytest
from django.db import OperationalError

pytestmark = pytest.mark.django_db


def closed_port():
    """A loopback port nothing listens on, so connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Production's default (cache) and DJANGO_SESSIONS_IN_DATABASE=true (cached_db).
@pytest.fixture(params=["cache", "cached_db"])
def redis_down(settings, request):
    """The cache (and so the sessions) on a Redis that refuses connections."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    settings.SESSION_ENGINE = f"django.contrib.sessions.backends.{request.param}"


def test_a_page_load_with_redis_down_is_a_503_with_retry_after(client, redis_down, caplog):
    with caplog.at_level(logging.INFO):
        response = client.get("/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    # One line says what happened; no traceback, and Django does not log it again.
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].name == "core.middleware"
    assert "ConnectionError" in lines[0].getMessage()
    assert lines[0].exc_info is None


def test_a_database_error_is_a_503_too(rf):
    from core.middleware import DependencyUnavailableMiddleware

    middleware = DependencyUnavailableMiddleware(lambda request: None)
    request = rf.get("/")
    response = middleware.process_exception(request, OperationalError("connection refused"))
    assert response.status_code == 503


def test_other_errors_stay_500s(rf):
    from core.middleware import DependencyUnavailableMiddleware

    middleware = DependencyUnavailableMiddleware(lambda request: None)
    assert middleware.process_exception(rf.get("/"), ValueError("a bug")) is None


def test_after_a_failure_pages_get_503_at_once_then_try_again(client, redis_down, settings):
    """Requests queued behind a timeout fail fast; after HOLD_SECONDS the next one tries."""
    from core.middleware import DependencyUnavailableMiddleware

    assert client.get("/").status_code == 503
    # Redis is back, but within the hold this worker does not try it yet.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    response = client.get("/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    time.sleep(DependencyUnavailableMiddleware.HOLD_SECONDS + 0.1)
    assert client.get("/").status_code == 200
