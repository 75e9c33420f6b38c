"""The second demo page: the checklist LiveView, its route, and its `toggle` event."""

import pytest
from channels.testing import WebsocketCommunicator

from config.asgi import application

ORIGIN = (b"origin", b"http://localhost")


@pytest.mark.django_db
def test_both_pages_render_with_links_to_each_other(client):
    for path, view in (("/", "CounterView"), ("/checklist/", "ChecklistView")):
        response = client.get(path)
        assert response.status_code == 200
        html = response.content.decode()
        assert f'dj-view="core.views.{view}"' in html
        assert 'dj-navigate="/"' in html
        assert 'dj-navigate="/checklist/"' in html


async def mount_checklist():
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    assert (await communicator.receive_json_from(timeout=10))["type"] == "connect"
    await communicator.send_json_to(
        {"type": "mount", "view": "core.views.ChecklistView", "params": {}, "url": "/checklist/"}
    )
    mounted = await communicator.receive_json_from(timeout=10)
    assert mounted["type"] == "mount", mounted
    assert "Launch checklist" in mounted["html"]
    assert "of 4 done" in mounted["html"]
    return communicator


async def toggle(communicator, step, ref):
    await communicator.send_json_to(
        {"type": "event", "event": "toggle", "params": {"step": step}, "ref": ref}
    )
    return await communicator.receive_json_from(timeout=10)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_toggle_ticks_and_unticks_a_step():
    communicator = await mount_checklist()
    try:
        reply = await toggle(communicator, "backups", 1)
        assert reply["type"] == "patch", reply
        assert reply["ref"] == 1
        assert "1" in str(reply["patches"])
        reply = await toggle(communicator, "backups", 2)
        assert reply["type"] == "patch", reply
        assert "0" in str(reply["patches"])
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_an_unknown_step_changes_nothing():
    communicator = await mount_checklist()
    try:
        reply = await toggle(communicator, "<script>", 1)
        assert reply["type"] in ("patch", "noop"), reply
        assert "script" not in str(reply.get("patches", ""))
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_reconnect_after_live_navigation_mounts_the_page_of_the_url():
    # djust's client keeps the first page's dj-view after dj-navigate, so its
    # reconnect asks for the counter while the address bar shows /checklist/.
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    try:
        await communicator.receive_json_from(timeout=10)
        await communicator.send_json_to(
            {"type": "mount", "view": "core.views.CounterView", "params": {}, "url": "/checklist/"}
        )
        mounted = await communicator.receive_json_from(timeout=10)
        assert mounted["type"] == "mount", mounted
        assert "Launch checklist" in mounted["html"]
    finally:
        await communicator.disconnect()
