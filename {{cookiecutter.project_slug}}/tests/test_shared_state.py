"""The counter's shared figures: two pages see each other's clicks and each other.

These run with the in-memory channel layer, presence backend and cache of the
test settings, so both pages live in this one process. The template's own
tests run the same checks across real workers sharing Redis.
"""

import asyncio
import json
import re
import time

import pytest
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from djust.backends.registry import reset_presence_backend

from config.asgi import application
from core import shared
from tests.test_settings import PROD_ENV, load_settings

ORIGIN = (b"origin", b"http://localhost")
FIGURE = re.compile(r'id="(count|online|total)">(\d+)<')


@pytest.fixture(autouse=True)
def empty_stores():
    """Each test starts with nobody online and no clicks."""
    reset_presence_backend()
    cache.clear()
    yield
    reset_presence_backend()
    cache.clear()


class Page:
    """One browser tab on the counter page, over djust's WebSocket protocol."""

    def __init__(self):
        self.socket = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
        self.ref = 0
        self.seen = {}

    async def open(self):
        connected, _ = await self.socket.connect(timeout=10)
        assert connected
        assert (await self.socket.receive_json_from(timeout=10))["type"] == "connect"
        await self.socket.send_json_to(
            {"type": "mount", "view": "core.views.CounterView", "params": {}, "url": "/"}
        )
        mounted = await self.socket.receive_json_from(timeout=10)
        assert mounted["type"] == "mount", mounted
        self.seen = self.read(mounted["html"])
        return self.seen

    async def click(self):
        """One click; returns djust's answer to it (its patch)."""
        self.ref += 1
        await self.socket.send_json_to(
            {"type": "event", "event": "increment", "params": {}, "ref": self.ref}
        )
        return await self.answer(lambda message: message.get("ref") == self.ref)

    async def figures(self):
        """The figures as last rendered.

        djust answers request_html with the page's last render, once per
        render; asked twice in a row it answers with an error instead, and the
        figures already read still stand.
        """
        await self.socket.send_json_to({"type": "request_html"})
        reply = await self.answer(lambda message: message["type"] in ("html_recovery", "error"))
        if reply["type"] == "html_recovery":
            self.seen = self.read(reply["html"])
        return self.seen

    async def shows(self, timeout=5.0, **expected):
        """Wait until a server push makes the page show these figures."""
        deadline = time.monotonic() + timeout
        while any(self.seen.get(name) != value for name, value in expected.items()):
            remaining = deadline - time.monotonic()
            # Waiting on the socket past its timeout would cancel the app.
            if remaining <= 0 or await self.socket.receive_nothing(timeout=remaining):
                raise AssertionError(f"expected {expected}, the page shows {self.seen}")
            message = await self.socket.receive_json_from(timeout=1)
            if message["type"] == "patch":
                await self.figures()
        return self.seen

    async def answer(self, accept):
        # Server pushes (patches with source "broadcast") may arrive first.
        for _ in range(50):
            message = await self.socket.receive_json_from(timeout=10)
            if accept(message):
                return message
        raise AssertionError("no answer in 50 messages")

    async def close(self):
        await self.socket.disconnect()

    @staticmethod
    def read(html):
        return {name: int(value) for name, value in FIGURE.findall(html)}


pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.asyncio
async def test_two_pages_see_each_others_clicks_in_the_total_but_keep_their_own_count():
    first, second = Page(), Page()
    await first.open()
    await second.open()
    try:
        await second.click()
        await second.click()
        assert await second.figures() == {"count": 2, "online": 2, "total": 2}
        await first.shows(total=2, count=0)

        await first.click()
        await second.shows(total=3, count=2)
        assert await first.figures() == {"count": 1, "online": 2, "total": 3}
    finally:
        await first.close()
        await second.close()


@pytest.mark.asyncio
async def test_online_counts_open_pages_and_drops_when_one_closes():
    first = Page()
    assert (await first.open())["online"] == 1
    second = Page()
    try:
        # The page that arrives counts itself at once; the other hears of it.
        assert (await second.open())["online"] == 2
        await first.shows(online=2)
    finally:
        await second.close()
    try:
        await first.shows(online=1)
    finally:
        await first.close()


@pytest.mark.asyncio
async def test_the_total_survives_a_fresh_mount():
    """A reconnect runs mount() again: the visitor's count restarts, the total does not."""
    page = Page()
    await page.open()
    for _ in range(3):
        await page.click()
    await page.close()

    again = Page()
    try:
        assert await again.open() == {"count": 0, "online": 1, "total": 3}
    finally:
        await again.close()


@pytest.mark.asyncio
async def test_a_burst_of_clicks_costs_each_page_two_pushes_not_one_per_click():
    clicker, watcher = Page(), Page()
    await clicker.open()
    await watcher.open()
    try:
        before = shared.figures_changed.pushes
        started = time.monotonic()
        for _ in range(20):
            await clicker.click()
        elapsed = time.monotonic() - started
        # However many clicks, one push at most is waiting in this worker.
        waiting = [task for task in asyncio.all_tasks() if "_push_later" in repr(task)]
        assert len(waiting) <= 1, waiting
        await watcher.shows(total=20)
        pushes = shared.figures_changed.pushes - before
        print(f"20 clicks in {elapsed:.2f} s made {pushes} pushes")
        # A leading push, then at most one per interval (the last one trailing).
        assert pushes <= 2 + elapsed / shared.PUSH_INTERVAL
    finally:
        await clicker.close()
        await watcher.close()


@pytest.mark.asyncio
async def test_browsers_cannot_call_the_push_handler():
    """handle_shared_figures is for server pushes; a page that sends it is refused."""
    page = Page()
    await page.open()
    try:
        page.ref += 1
        await page.socket.send_json_to(
            {
                "type": "event",
                "event": "handle_shared_figures",
                "params": {"total": 10**9},
                "ref": page.ref,
            }
        )
        await page.answer(lambda message: message["type"] == "error")
        assert (await page.figures())["total"] == 0
    finally:
        await page.close()


def test_production_keeps_presence_and_the_total_in_redis():
    """Memory presence would count each worker's visitors only."""
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        "print(json.dumps([settings.DJUST_CONFIG['PRESENCE_BACKEND'], "
        "settings.DJUST_CONFIG['PRESENCE_REDIS_URL'], settings.CACHES['default']['BACKEND']]))"
    )
    result = load_settings(PROD_ENV, code)
    assert result.returncode == 0, result.stderr
    backend, url, cache_backend = json.loads(result.stdout.strip().splitlines()[-1])
    assert backend == "redis"
    assert url.startswith(PROD_ENV["REDIS_URL"] + "?socket_timeout=")
    # Django's Redis cache, counting hits and misses for /metrics (core/cache.py).
    assert cache_backend == "core.cache.RedisCache"
