"""Warm each fresh worker up before readiness says 200, so the first visitor does not pay for it.

A worker that has just imported its code still has work it does once per
process, on its first page and its first LiveView: djust imports about a
hundred more modules on its first render, the template engine and the view's
template load, the first database and Redis connections open, and the channel
layer loads its Redis client and encryption on the first WebSocket. Measured on
the default project (the template's bench/importtime.py, two cores): a worker's
first GET / took 60-80 ms against 15 ms for the next, its first LiveView mount
25-60 ms against 10 ms. With this warm-up the first visitor's page took the
15 ms of a warm worker's.

So when the server starts a worker (the ASGI lifespan startup, which uvicorn
and Gunicorn's uvicorn workers both send), the worker sends itself one GET /
and mounts the LiveView that page names, in-process through the same
application a visitor reaches. It accepts connections meanwhile:
/health/live/ answers at once (the process is alive; nothing should restart
it), and /health/ answers 503 "warming up" (core/health.py) until every worker
of this server is warm.

Every worker, not just the one a probe reaches: several workers share one port
and a probe lands on one of them at random, so one warm worker answering 200
would say nothing about its siblings. Each worker leaves a marker file named
after its pid in a directory of this server's own, made empty by bin/serve at
start (prepare(), next to the Prometheus files of config/metrics.py);
readiness counts the markers of workers still alive against WEB_CONCURRENCY. A worker that
dies and is replaced makes the host answer 503 until its successor is warm.

The warm-up is a visitor like any other: one cookieless GET / (a session and a
djust state key, cleared by the clearsessions timer and the key's TTL), counted
in the request metrics once per worker start. It gives up after
WARM_UP_TIMEOUT, and a failed warm-up (Redis or the database still down) ends
the warm-up all the same: /health/ then reports the dependency that is down,
which is the more useful answer.
"""

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

logger = logging.getLogger(__name__)

# The page the warm-up renders: the one most visitors open first.
WARM_UP_PATH = "/"
# The whole warm-up, GET and mount, gives up after this many seconds.
WARM_UP_TIMEOUT = 15

# "idle": no server started a warm-up in this process (manage.py, the test
# client, a server without lifespan): readiness does not wait for one.
_phase = "idle"
_task = None


def marker_directory():
    """Where this server's workers leave their "warm" markers; None outside bin/serve."""
    path = os.environ.get("WARM_UP_MARKERS")
    return Path(path) if path else None


def prepare(metrics_directory):
    """Make this server's marker directory and export it to its workers (bin/serve, before any).

    It is named after bin/serve's pid, under the metrics directory, so that two
    servers sharing one (say, app hosts simulated as network namespaces of one
    machine, with one /tmp) never count or clear each other's workers. Directories of servers
    no longer running are removed, and ours starts empty: pids get reused.
    """
    root = metrics_directory / "warm"
    root.mkdir(mode=0o700, exist_ok=True)
    own = root / str(os.getpid())
    for directory in root.iterdir():
        if directory == own or not Path(f"/proc/{directory.name}").exists():
            shutil.rmtree(directory, ignore_errors=True)
    own.mkdir(mode=0o700)
    os.environ["WARM_UP_MARKERS"] = str(own)
    return own


def workers_warm(directory):
    """How many workers of this server are alive and warm, going by their markers."""
    return sum(1 for marker in directory.glob("*") if Path(f"/proc/{marker.name}").exists())


def expected_workers():
    from config import server

    return server.WORKERS


def not_ready_reason():
    """Why this server is not ready yet ("warming up, ..."), or None when it is warm."""
    if _phase == "idle":
        return None
    if _phase == "warming":
        return "warming up"
    directory = marker_directory()
    if directory is None or not directory.is_dir():
        return None
    warm, expected = workers_warm(directory), expected_workers()
    if warm < expected:
        return f"warming up: {warm} of {expected} workers warm"
    return None


# --- the warm-up itself -----------------------------------------------------------


def site_host():
    """A host name the site answers to, for the warm-up's Host and Origin headers."""
    from django.conf import settings

    for host in settings.ALLOWED_HOSTS:
        if host != "*":
            return host.lstrip(".")
    return "localhost"


def scope(kind, path, host, headers=()):
    """An ASGI scope as uvicorn passes it behind the TLS proxy (scheme https)."""
    return {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "https" if kind == "http" else "wss",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", host.encode()), *headers],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        **({"method": "GET"} if kind == "http" else {"subprotocols": []}),
    }


async def get(app, path, host):
    """GET path through the application; its status and body."""
    answered = []
    requested = asyncio.Event()

    async def receive():
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects first

    async def send(message):
        answered.append(message)

    await app(scope("http", path, host), receive, send)
    status = answered[0]["status"]
    body = b"".join(m.get("body", b"") for m in answered if m["type"] == "http.response.body")
    return status, body.decode(errors="replace")


async def mount(app, host, view):
    """Open /ws/live/ through the application and mount `view`, as djust's client does."""
    inbound, outbound = asyncio.Queue(), asyncio.Queue()
    origin = (b"origin", f"https://{host}".encode())
    connection = scope("websocket", "/ws/live/", host, [origin])
    consumer = asyncio.ensure_future(app(connection, inbound.get, outbound.put))

    async def next_frame():
        message = await outbound.get()
        if message["type"] != "websocket.send":
            raise RuntimeError(f"WebSocket answered {message['type']}")
        return json.loads(message["text"])

    try:
        await inbound.put({"type": "websocket.connect"})
        accepted = await outbound.get()
        if accepted["type"] != "websocket.accept":
            return f"refused ({accepted['type']})"
        await next_frame()  # {"type": "connect", "session_id": ...}
        request = {"type": "mount", "view": view, "params": {}, "url": WARM_UP_PATH,
                   "has_prerendered": False, "client_timezone": "UTC"}  # fmt: skip
        await inbound.put({"type": "websocket.receive", "text": json.dumps(request)})
        for _ in range(20):
            frame = await next_frame()
            if frame.get("type") in ("mount", "error"):
                return "ok" if frame["type"] == "mount" else f"error: {frame.get('error')}"
        return "no mount frame"
    finally:
        await inbound.put({"type": "websocket.disconnect", "code": 1000})
        try:
            await asyncio.wait_for(consumer, 5)
        except Exception:  # the consumer's own close path; the outcome is already known
            consumer.cancel()


async def warm_up(app):
    """Render WARM_UP_PATH and mount its LiveView once; then this worker is warm."""
    global _phase
    started = time.monotonic()
    outcome = {}
    try:
        async with asyncio.timeout(WARM_UP_TIMEOUT):
            host = site_host()
            status, body = await get(app, WARM_UP_PATH, host)
            outcome[f"GET {WARM_UP_PATH}"] = status
            view = re.search(r'dj-view="([\w.]+)"', body)
            if view:
                outcome[f"mount {view[1]}"] = await mount(app, host, view[1])
    except Exception as error:  # whatever failed, the worker must still become ready
        outcome["error"] = f"{type(error).__name__}: {error}"
    finally:
        _phase = "warm"
        directory = marker_directory()
        if directory is not None:
            with contextlib.suppress(OSError):
                (directory / str(os.getpid())).touch()
    # Tests and operators read this line: the warm-up ran in this worker, and how it went.
    logger.info(
        "Worker %s warm after %.2f s: %s",
        os.getpid(),
        time.monotonic() - started,
        ", ".join(f"{step} {result}" for step, result in outcome.items()),
    )


class WarmUpOnStart:
    """ASGI wrapper: on the server's lifespan startup, start warming this worker in the background.

    The startup completes at once, so the worker accepts connections (and answers
    /health/live/) while it warms; core/health.py keeps /health/ at 503 until then.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        global _phase, _task
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _phase = "warming"
                _task = asyncio.create_task(warm_up(self.app))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _task is not None and not _task.done():
                    _task.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return
