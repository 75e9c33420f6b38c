"""One worker's start, phase by phase, in-process: run by bench/importtime.py with the project's Python.

    cd GENERATED_PROJECT && .venv/bin/python PATH/TO/bench/startup_probe.py DOMAIN

Times settings, django.setup() (djust's ready() on its own), the rest of
config.asgi, then the first and second GET / and the first and second LiveView
mount through the ASGI application itself (no server, no socket), and names the
modules each first request imports. Prints one JSON object on stdout.
"""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")

clock = time.perf_counter
phases = {}


def timed(name):
    """Context manager adding the seconds spent inside to phases[name]."""

    class Timer:
        def __enter__(self):
            self.start = clock()

        def __exit__(self, *exc):
            phases[name] = round(phases.get(name, 0) + clock() - self.start, 4)

    return Timer()


def new_modules(before):
    """Top-level packages of the modules imported since `before`, with counts."""
    counts = {}
    for name in set(sys.modules) - before:
        package = name.split(".")[0]
        counts[package] = counts.get(package, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


async def http_get(application, path, domain):
    """GET path through the ASGI app as uvicorn would pass it behind the proxy (HTTPS)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "https", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"host", domain.encode())],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    sent = []
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    return sent[0]["status"]


async def mount(application, domain):
    """Connect to /ws/live/ and mount the counter; the mount frame's type."""
    from channels.testing import WebsocketCommunicator

    communicator = WebsocketCommunicator(
        application,
        "/ws/live/",
        headers=[(b"origin", f"https://{domain}".encode()), (b"host", domain.encode())],
    )
    connected, _ = await communicator.connect(timeout=10)
    assert connected, "WebSocket refused"
    await communicator.receive_json_from(timeout=10)  # {"type": "connect", ...}
    await communicator.send_json_to(
        {"type": "mount", "view": "core.views.CounterView", "params": {}, "url": "/",
         "has_prerendered": False, "client_timezone": "UTC"}
    )  # fmt: skip
    for _ in range(20):
        message = await communicator.receive_json_from(timeout=10)
        if message.get("type") in ("mount", "error"):
            break
    await communicator.disconnect()
    return message.get("type")


def main():
    domain = sys.argv[1] if len(sys.argv) > 1 else "localhost"
    started = clock()
    with timed("import django + settings"):
        import django
        from django.conf import settings

        settings.INSTALLED_APPS  # noqa: B018  (reads the settings module)
    from djust.apps import DjustConfig

    ready = DjustConfig.ready

    def timed_ready(self):
        with timed("djust ready()"):
            ready(self)

    DjustConfig.ready = timed_ready
    with timed("django.setup() (incl. djust ready())"):
        django.setup()
    with timed("rest of import config.asgi"):
        import config.asgi

    phases["worker start, total"] = round(clock() - started, 4)
    import channels.testing  # noqa: F401  (the harness, not counted below)

    application = config.asgi.application
    first = {}
    loop = asyncio.new_event_loop()
    for label, call in (
        ("GET /", lambda: http_get(application, "/", domain)),
        ("LiveView mount", lambda: mount(application, domain)),
    ):
        for attempt in ("first", "second"):
            before = set(sys.modules)
            start = clock()
            outcome = loop.run_until_complete(call())
            phases[f"{attempt} {label} (ms)"] = round((clock() - start) * 1000, 1)
            phases[f"{attempt} {label} answer"] = outcome
            if attempt == "first":
                first[label] = new_modules(before)
    loop.close()
    print(json.dumps({"phases": phases, "first_request_imports": first}))


if __name__ == "__main__":
    main()
