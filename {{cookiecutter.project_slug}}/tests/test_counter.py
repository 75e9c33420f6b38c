"""The demo counter over a real ASGI WebSocket: mount, then an `increment` event."""

import pytest
from channels.testing import WebsocketCommunicator

from config.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

ORIGIN = (b"origin", b"http://localhost")


async def open_session(headers=(ORIGIN,)):
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=list(headers))
    connected, _ = await communicator.connect(timeout=10)
    return communicator, connected


async def mounted_session():
    """A session that has mounted the demo counter, its hello and mount frames read."""
    communicator, connected = await open_session()
    assert connected
    await communicator.receive_json_from(timeout=10)
    await communicator.send_json_to(
        {"type": "mount", "view": "core.views.CounterView", "params": {}, "url": "/"}
    )
    mounted = await communicator.receive_json_from(timeout=10)
    assert mounted["type"] == "mount", mounted
    return communicator


async def reply_to(communicator, ref):
    """The answer to the event numbered ref.

    Server pushes (another page's click, a page opening, this page's own
    arrival) may come first; they carry no ref and are skipped here.
    """
    for _ in range(20):
        message = await communicator.receive_json_from(timeout=10)
        if message.get("ref") == ref:
            return message
    raise AssertionError(f"no answer to event {ref} in 20 messages")


async def test_counter_increments_over_the_websocket():
    communicator, connected = await open_session()
    assert connected
    try:
        hello = await communicator.receive_json_from(timeout=10)
        assert hello["type"] == "connect"

        await communicator.send_json_to(
            {
                "type": "mount",
                "view": "core.views.CounterView",
                "params": {},
                "url": "/",
                "has_prerendered": False,
                "client_timezone": "UTC",
            }
        )
        mounted = await communicator.receive_json_from(timeout=10)
        assert mounted["type"] == "mount", mounted
        assert "Count:" in mounted["html"]

        for ref in (1, 2):
            await communicator.send_json_to(
                {"type": "event", "event": "increment", "params": {}, "ref": ref}
            )
            reply = await reply_to(communicator, ref)
            assert reply["type"] == "patch", reply
            assert reply["ref"] == ref
            assert str(ref) in str(reply["patches"])
    finally:
        await communicator.disconnect()


async def test_unknown_events_are_rejected():
    communicator = await mounted_session()
    try:
        await communicator.send_json_to(
            {"type": "event", "event": "delete_everything", "params": {}, "ref": 1}
        )
        reply = await communicator.receive_json_from(timeout=10)
        assert reply["type"] == "error"
    finally:
        await communicator.disconnect()


async def test_a_foreign_origin_cannot_open_a_session():
    communicator, connected = await open_session(headers=[(b"origin", b"https://evil.example")])
    assert not connected
    await communicator.disconnect()
