"""The WebSocket protocol bin/serve runs (config/ws.py), under a real uvicorn.

test_counter.py drives the consumer in-process; here the bytes cross a socket,
so the handshake's extension terms and compressed frames are the real ones.
"""

import json
import threading
import time

import pytest
import uvicorn
from websockets.sync.client import connect

from config import server

ORIGIN = "http://localhost"


@pytest.fixture
def live_server_url():
    """Uvicorn with the production WebSocket protocol on a free loopback port."""
    config = uvicorn.Config(
        server.APP,
        host="127.0.0.1",
        port=0,
        ws=server.WS_PROTOCOL,
        lifespan="off",
        log_level="warning",
    )
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    port = uvicorn_server.servers[0].sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}/ws/live/"
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


def click_twice(websocket):
    """Mount the counter and send two clicks; return the patch frames."""
    assert json.loads(websocket.recv(timeout=10))["type"] == "connect"
    websocket.send(json.dumps({"type": "mount", "view": "core.views.CounterView", "url": "/"}))
    assert json.loads(websocket.recv(timeout=10))["type"] == "mount"
    patches = []
    for ref in (1, 2):
        websocket.send(json.dumps({"type": "event", "event": "increment", "ref": ref}))
        patches.append(json.loads(websocket.recv(timeout=10)))
    return patches


@pytest.mark.django_db(transaction=True)
def test_deflate_is_negotiated_without_context_takeover(live_server_url):
    # The offer every browser sends: "permessage-deflate; client_max_window_bits".
    with connect(live_server_url, origin=ORIGIN, compression="deflate") as websocket:
        terms = websocket.response.headers["Sec-WebSocket-Extensions"]
        patches = click_twice(websocket)

    assert terms.startswith("permessage-deflate")
    # Neither side keeps a compressor per connection: idle sessions stay small.
    assert "server_no_context_takeover" in terms
    assert "client_no_context_takeover" in terms
    assert [patch["ref"] for patch in patches] == [1, 2]
    assert "2" in str(patches[-1]["patches"])


@pytest.mark.django_db(transaction=True)
def test_clients_without_compression_are_served_plain(live_server_url):
    with connect(live_server_url, origin=ORIGIN, compression=None) as websocket:
        assert "Sec-WebSocket-Extensions" not in websocket.response.headers
        assert [patch["ref"] for patch in click_twice(websocket)] == [1, 2]
