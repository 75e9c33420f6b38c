"""The counter's shared figures across real workers: why the template ships Redis.

The default variant runs as in test_rehearsal: a real Redis with a password,
the project's own bin/serve under config.settings.prod with two workers, Nginx
with the generated site. Two LiveView sessions that landed on different worker
processes (the server's log names the process that mounted each) see each
other's clicks in `total` within a second (the issue's bound; the delays are
printed) and count each other in `online`. A Chromium page shows the same
figures, then every worker restarts and the page comes back with the total it
had: it lives in Redis, not in a process.

Screenshots go to $DEMO_SCREENSHOTS when set, else to tmp_path.
"""

import asyncio
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from tests.stack import VIEW_MOUNTED_JS, AppServer, LiveSession, Nginx, RedisServer
from tests.test_rehearsal import app_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default")]

VARIANT = "default"
FIGURE = re.compile(r'id="(count|online|total)">(\d+)<')
# The requirement: a click shows on a page on another host within 1 s.
SHARED_WITHIN = 1.0


@pytest.fixture(scope="module")
def served(bake, tmp_path_factory):
    project = bake(VARIANT).sync()
    base = tmp_path_factory.mktemp("shared-state")
    (base / "redis").mkdir()
    redis = RedisServer(base / "redis").start()
    app = AppServer(project, app_env(project, redis, None), workers=2, log_path=base / "serve.log")
    app.prepare().start()
    site = (project.path / "deploy" / "nginx" / f"{project.slug}.conf").read_text()
    (base / "nginx").mkdir()
    nginx = Nginx(base / "nginx", site, app.port, static_root=project.path / "staticfiles", slug=project.slug)
    nginx.start()
    yield redis, app, nginx
    nginx.stop()
    app.stop()
    redis.stop()


@pytest.fixture
def background():
    """An event loop in its own thread for the sessions (Playwright owns this thread's)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield lambda coroutine, timeout=60: asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


class Tab:
    """A LiveSession that keeps track of the figures its page shows."""

    def __init__(self, session, mounted_html):
        self.session = session
        self.seen = read(mounted_html)

    async def click(self, ref):
        await self.session.increment(ref)
        await self.refresh()

    async def refresh(self):
        """The page as last rendered: djust answers request_html once per render."""
        await self.session.socket.send(json.dumps({"type": "request_html"}))
        reply = await self.session.receive(lambda m: m["type"] in ("html_recovery", "error"), 10)
        if reply["type"] == "html_recovery":
            self.seen = read(reply["html"])

    async def shows(self, timeout, **expected):
        """Seconds until a server push makes the page show `expected`; AssertionError after timeout."""
        started = time.monotonic()
        if any(self.seen.get(name) != value for name, value in expected.items()):
            await self.refresh()  # patches already read by click() or refresh() count too
        while any(self.seen.get(name) != value for name, value in expected.items()):
            remaining = started + timeout - time.monotonic()
            try:
                await self.session.receive(lambda m: m["type"] == "patch", max(remaining, 0.01))
            except TimeoutError:
                shown = f"expected {expected} within {timeout} s, the page shows {self.seen}"
                raise AssertionError(shown) from None
            await self.refresh()
        return time.monotonic() - started

    async def broadcasts_during(self, seconds):
        """How many server pushes re-rendered this page in the next `seconds`."""
        deadline, renders = time.monotonic() + seconds, 0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = await self.session.receive(lambda m: m.get("source") == "broadcast", remaining)
            except TimeoutError:
                break
            renders += message["type"] == "patch"
        return renders


async def close_all(*tabs):
    await asyncio.gather(*(tab.session.close() for tab in tabs))


def read(html):
    return {name: int(value) for name, value in FIGURE.findall(html)}


async def open_tab(nginx):
    url, origin = f"wss://localhost:{nginx.https_port}/ws/live/", f"https://localhost:{nginx.https_port}"
    session = await LiveSession(url, origin).open()
    return Tab(session, session.mounted["html"])


def worker_of(app):
    """session id -> pid of the worker process that mounted it, from the server's log."""
    workers = {}
    for line in app.log_lines():
        if "mounted view core.views.CounterView" in line:
            record = json.loads(line)
            session = re.search(r"\(session ([0-9a-f-]+)\)", record["message"])
            if session:
                workers[session.group(1)] = record["process"]
    return workers


async def two_tabs_on_two_workers(app, nginx):
    """Open sessions at once until two sit on different workers; close the rest."""
    tabs = []
    for _ in range(3):
        tabs += await asyncio.gather(*(open_tab(nginx) for _ in range(8)))
        workers = worker_of(app)
        by_worker = {workers.get(tab.session.session_id): tab for tab in tabs}
        by_worker.pop(None, None)
        if len(by_worker) >= 2:
            break
    else:
        raise AssertionError(f"all {len(tabs)} sessions landed on one worker: {set(worker_of(app).values())}")
    first, second = list(by_worker.values())[:2]
    await close_all(*(tab for tab in tabs if tab not in (first, second)))
    return first, second, sorted(by_worker)


@pytest.fixture
def shots(tmp_path):
    directory = Path(os.environ.get("DEMO_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return lambda page, name: page.screenshot(path=str(directory / f"demo-{name}.png"))


def page_text(page, selector):
    element = page.query_selector(selector)
    return element.text_content().strip() if element else None


def wait_text(page, selector, expected, timeout):
    """Poll from Python (a JS predicate string would need 'unsafe-eval'); the seconds it took."""
    started = time.monotonic()
    while page_text(page, selector) != expected:
        if time.monotonic() - started > timeout:
            seen = page_text(page, selector)
            pytest.fail(f"{selector} shows {seen!r}, expected {expected!r}", pytrace=False)
        page.wait_for_timeout(50)
    return time.monotonic() - started


def wait_mounted(page, timeout=15):
    deadline = time.monotonic() + timeout
    while not page.evaluate(VIEW_MOUNTED_JS):
        if time.monotonic() > deadline:
            pytest.fail("the counter page never mounted over its WebSocket", pytrace=False)
        page.wait_for_timeout(100)


def test_pages_on_different_workers_share_the_total_and_presence(served, background, browser, shots):
    redis, app, nginx = served
    log_start = len(app.log_lines())
    first, second, workers = background(two_tabs_on_two_workers(app, nginx))
    print(f"\nsessions on workers {workers}")
    try:
        background(first.shows(5, online=2))
        background(second.shows(5, online=2))
        total = second.seen["total"]

        # A click on one worker, seen on the other.
        delays = []
        for ref, (clicker, watcher) in enumerate([(first, second), (second, first)], start=1):
            started = time.monotonic()
            background(clicker.click(1))
            background(watcher.shows(SHARED_WITHIN, total=total + ref))
            delays.append(time.monotonic() - started)
        print("a click shown by the other worker's page after " + ", ".join(f"{d:.3f} s" for d in delays))
        assert max(delays) < SHARED_WITHIN, delays
        assert first.seen["count"] == 1 and second.seen["count"] == 1, (first.seen, second.seen)

        # Ten clicks in half a second: the other page renders per push, not per click.
        async def burst():
            watch = asyncio.create_task(second.broadcasts_during(1.5))
            for ref in range(2, 12):
                await first.click(ref)
                await asyncio.sleep(0.05)
            renders = await watch
            await second.refresh()  # the patches watched are the page's latest render
            return renders

        renders = background(burst())
        background(second.shows(SHARED_WITHIN, total=total + 12))
        print(f"10 clicks on one worker: {renders} renders of a page on the other worker")

        # Clicks at the same instant on both workers all count: each is one atomic INCR.
        async def together():
            for ref in range(12, 17):
                await asyncio.gather(first.click(ref), second.click(ref))

        background(together())
        background(first.shows(SHARED_WITHIN, total=total + 22))
        background(second.shows(SHARED_WITHIN, total=total + 22))
        total += 10  # the figures below count from here

        # A browser joins: it counts itself and the two sessions, and sees their clicks.
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 960, "height": 640})
        try:
            page = context.new_page()
            page.goto(nginx.url + "/", wait_until="load", timeout=20000)
            wait_mounted(page)
            wait_text(page, "#online", "3", 5)
            wait_text(page, "#total", str(total + 12), 5)
            background(second.click(2))
            shown_in = wait_text(page, "#total", str(total + 13), 5)
            print(f"the browser showed a session's click in {shown_in:.3f} s")
            page.click("button[dj-click=increment]")
            wait_text(page, "#count", "1", 5)
            background(first.shows(SHARED_WITHIN, total=total + 14))
            shots(page, "shared")

            # The sessions leave; the page hears of it.
            background(first.session.close())
            background(second.session.close())
            print(f"the browser saw two pages close in {wait_text(page, '#online', '1', 5):.3f} s")

            # Every worker restarts: the page reconnects, mounts again, and the total is still there.
            started = time.monotonic()
            app.stop()
            stopped = time.monotonic() - started
            app.start()
            restarted = time.monotonic() - started
            print(f"SIGTERM stopped both workers in {stopped:.2f} s; serving again after {restarted:.2f} s")
            wait_text(page, "#count", "0", 20)  # mount() ran again
            wait_text(page, "#total", str(total + 14), 5)
            wait_text(page, "#online", "1", 5)
        finally:
            context.close()
        again = background(open_tab(nginx))
        try:
            assert again.seen["total"] == total + 14, again.seen
        finally:
            background(again.session.close())
        # No TTL (-1): `volatile-lru` never evicts it. Django's key is PREFIX:VERSION:key.
        assert redis.cli("TTL", "cache:1:demo:total-clicks").strip() == "-1", "the total has a TTL"
    finally:
        background(close_all(first, second))
    # Nothing went wrong on the way, the shutdown included (a push task left
    # pending would show as asyncio's "Task was destroyed" ERROR).
    troubles = [
        line[:300]
        for line in app.log_lines()[log_start:]
        if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line or "Could not " in line
    ]
    assert not troubles, "\n".join(troubles)
