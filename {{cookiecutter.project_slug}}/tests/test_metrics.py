"""/metrics: who may read it, and the LiveView figures a session leaves in it."""

import pytest
from channels.testing import WebsocketCommunicator
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from djust.push import apush_to_view
from prometheus_client import REGISTRY

from config.asgi import application
from config.env import env_networks
from core.metrics import close_code_label

ORIGIN = (b"origin", b"http://localhost")


def value(name, **labels):
    """The current value of one sample in this process, 0.0 if it was never recorded."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("remote_addr", "headers", "status"),
    [
        ("127.0.0.1", {}, 200),
        ("10.1.2.3", {}, 200),  # a Prometheus on the private network
        ("203.0.113.7", {}, 403),  # the internet, reaching the port directly
        # Through the public proxy (Nginx or the load balancer add the header),
        # even from an allowed address: as if there were no such page.
        ("127.0.0.1", {"HTTP_X_FORWARDED_FOR": "203.0.113.7"}, 404),
    ],
)
def test_metrics_are_served_to_the_monitoring_network_only(remote_addr, headers, status):
    # An address as Host, over plain HTTP: how Prometheus scrapes a worker host.
    response = Client().get(
        "/metrics", REMOTE_ADDR=remote_addr, HTTP_HOST="10.0.0.5:8000", **headers
    )
    assert response.status_code == status
    if status == 200:
        assert response["Content-Type"].startswith("text/plain;")
        assert b"liveview_sessions_open" in response.content
        assert b"django_http_requests_total_by_method" in response.content
    else:
        assert b"liveview" not in response.content


def test_a_malformed_allow_list_names_the_variable(monkeypatch):
    monkeypatch.setenv("METRICS_ALLOWED_IPS", "10.0.0.0/8,10.0.0.300")
    with pytest.raises(ImproperlyConfigured, match=r"METRICS_ALLOWED_IPS: '10\.0\.0\.300'"):
        env_networks("METRICS_ALLOWED_IPS")


def test_close_codes_a_client_invents_share_one_label():
    assert close_code_label(1000) == "1000"
    assert close_code_label(4429) == "4429"
    assert close_code_label(3999) == "other"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_session_is_counted_from_connect_to_disconnect():
    before = {
        "connects": value("liveview_connects_total"),
        "handled": value("liveview_events_total", outcome="handled"),
        "rejected": value("liveview_events_total", outcome="rejected"),
        "malformed": value("liveview_events_total", outcome="malformed"),
        "timed": value("liveview_event_duration_seconds_count"),
        "closed": value("liveview_disconnects_total", code="1000"),
    }
    open_before = value("liveview_sessions_open")
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    try:
        await communicator.receive_json_from(timeout=10)
        assert value("liveview_sessions_open") == open_before + 1
        await communicator.send_json_to(
            {"type": "mount", "view": "core.views.CounterView", "params": {}, "url": "/"}
        )
        await communicator.receive_json_from(timeout=10)
        for ref in (1, 2, 3):
            await communicator.send_json_to(
                {"type": "event", "event": "increment", "params": {}, "ref": ref}
            )
            assert (await communicator.receive_json_from(timeout=10))["type"] == "patch"
        await communicator.send_json_to({"type": "event", "event": "no_such_handler", "params": {}})
        assert (await communicator.receive_json_from(timeout=10))["type"] == "error"
        await communicator.send_json_to({"type": "event", "event": 7})
        assert (await communicator.receive_json_from(timeout=10))["type"] == "error"
    finally:
        await communicator.disconnect(code=1000)

    assert value("liveview_connects_total") == before["connects"] + 1
    assert value("liveview_events_total", outcome="handled") == before["handled"] + 3
    assert value("liveview_events_total", outcome="rejected") == before["rejected"] + 1
    assert value("liveview_events_total", outcome="malformed") == before["malformed"] + 1
    # Only handled events are timed.
    assert value("liveview_event_duration_seconds_count") == before["timed"] + 3
    assert value("liveview_disconnects_total", code="1000") == before["closed"] + 1
    assert value("liveview_sessions_open") == open_before


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_server_push_to_a_mounted_view_is_counted():
    pushes = value("liveview_server_pushes_total")
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    try:
        await communicator.receive_json_from(timeout=10)
        await communicator.send_json_to(
            {"type": "mount", "view": "core.views.CounterView", "params": {}, "url": "/"}
        )
        await communicator.receive_json_from(timeout=10)
        await apush_to_view("core.views.CounterView", state={"count": 41})
        pushed = await communicator.receive_json_from(timeout=10)
        assert "41" in str(pushed), pushed
    finally:
        await communicator.disconnect(code=1000)
    assert value("liveview_server_pushes_total") == pushes + 1
