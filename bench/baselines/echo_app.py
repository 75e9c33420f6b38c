"""The ceiling: a bare ASGI WebSocket app that speaks just enough of djust's protocol.

No framework, no Django, no state: it answers `mount` with a page-sized HTML
string and each `event` with a patch frame of the same shape and size djust
sends, so the load script, Nginx and uvicorn do exactly the work they do for
the real service, and nothing else runs. Also serves `GET /` with "ok" for
health polling.

    uvicorn bench.baselines.echo_app:app --workers 2
"""

import json
import os
import uuid

# Length of the HTML djust sends on mount for the counter page (measured from
# the generated project; bench/run.py passes the value it saw).
MOUNT_HTML_BYTES = int(os.environ.get("ECHO_MOUNT_HTML_BYTES", "600"))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})
    elif scope["type"] == "websocket":
        await websocket(receive, send)


async def websocket(receive, send):
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    session_id = str(uuid.uuid4())
    await send({"type": "websocket.send", "text": json.dumps({"type": "connect", "session_id": session_id})})
    version = 1
    count = 0
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            continue
        frame = json.loads(text)
        kind = frame.get("type")
        if kind == "mount":
            reply = {
                "type": "mount",
                "session_id": session_id,
                "view": frame.get("view"),
                "version": version,
                "html": "x" * MOUNT_HTML_BYTES,
                "has_ids": True,
            }
        elif kind == "event":
            version += 1
            count += 1
            reply = {
                "type": "patch",
                "patches": [{"type": "SetText", "path": [0, 1, 0], "text": str(count)}],
                "version": version,
                "ref": frame.get("ref"),
            }
        elif kind == "ping":
            reply = {"type": "pong"}
        else:
            reply = {"type": "error", "error": "Event rejected"}
        await send({"type": "websocket.send", "text": json.dumps(reply)})
