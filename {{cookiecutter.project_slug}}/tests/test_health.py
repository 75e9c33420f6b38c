"""Readiness reports each dependency; liveness touches none; probes by IP are answered."""

import socket
import time

import pytest

pytestmark = pytest.mark.django_db


def closed_port():
    """A loopback port nothing listens on, so connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_liveness_is_ok(client):
    response = client.get("/health/live/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readiness_is_ok_when_every_dependency_answers(client):
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {
        "database": "ok",
        "cache": "ok",
        "state_backend": "ok",
        "channel_layer": "ok",
    }


def test_readiness_is_503_and_fast_when_the_cache_is_down(client, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    started = time.monotonic()
    response = client.get("/health/")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["cache"] != "ok"
    assert body["checks"]["database"] == "ok"
    assert elapsed < 5, f"a probe must never hang: took {elapsed:.1f} s"


@pytest.mark.parametrize("path", ["/health/", "/health/live/"])
def test_probe_by_ip_over_plain_http_is_not_redirected_or_refused(client, settings, path):
    settings.ALLOWED_HOSTS = ["app.example.org"]
    settings.SECURE_SSL_REDIRECT = True
    response = client.get(path, HTTP_HOST="10.0.3.7:8000")
    assert response.status_code == 200


def test_other_pages_still_validate_the_host(client, settings):
    settings.ALLOWED_HOSTS = ["app.example.org"]
    response = client.get("/", HTTP_HOST="10.0.3.7:8000")
    assert response.status_code == 400
