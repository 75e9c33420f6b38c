"""The demo's two pages in Chromium: live navigation, back and forward, the connection indicator.

The default variant runs for real as in test_rehearsal: Redis, the project's
own bin/serve under config.settings.prod, Nginx with the generated site, and
Debian's Chromium. A person clicks through the demo and the browser's back and
forward buttons; after each step the page on screen is the right one and its
events are answered. Then the app server stops and starts again, and the
header's indicator shows it (driven by the dj-connected / dj-disconnected
classes djust's client puts on <body>).

Screenshots go to $DEMO_SCREENSHOTS when set (to look at), else to tmp_path.
"""

import os
import time
from pathlib import Path

import pytest

from tests.stack import VIEW_MOUNTED_JS, AppServer, Nginx, RedisServer
from tests.test_rehearsal import app_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default")]

VARIANT = "default"
CONNECTED = "body.dj-connected"
RECONNECTING = "body.dj-disconnected"


@pytest.fixture(scope="module")
def served(bake, tmp_path_factory):
    project = bake(VARIANT).sync()
    base = tmp_path_factory.mktemp("demo-pages")
    (base / "redis").mkdir()
    redis = RedisServer(base / "redis").start()
    app = AppServer(project, app_env(project, redis, None), workers=1, log_path=base / "serve.log")
    app.prepare().start()
    site = (project.path / "deploy" / "nginx" / f"{project.slug}.conf").read_text()
    (base / "nginx").mkdir()
    nginx = Nginx(base / "nginx", site, app.port, static_root=project.path / "staticfiles", slug=project.slug)
    nginx.start()
    yield app, nginx
    nginx.stop()
    app.stop()
    redis.stop()


@pytest.fixture
def shots(tmp_path):
    directory = Path(os.environ.get("DEMO_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return lambda page, name: page.screenshot(path=str(directory / f"demo-{name}.png"))


class Visit:
    """One browser tab on the demo, recording what a developer would see in the console."""

    def __init__(self, browser, nginx):
        self.context = browser.new_context(ignore_https_errors=True, viewport={"width": 960, "height": 600})
        self.page = self.context.new_page()
        self.base = nginx.url
        self.problems = []
        self.documents = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        # Full page loads; live navigation loads none.
        self.page.on("request", self._request)

    def _request(self, request):
        if request.resource_type == "document":
            self.documents.append(request.url)

    def _console(self, message):
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(f"console {message.type}: {message.text}")

    def path(self):
        return "/" + self.page.url.removeprefix(self.base).lstrip("/")

    def text(self, selector):
        element = self.page.query_selector(selector)
        return element.text_content().strip() if element else None

    def wait_text(self, selector, expected, timeout):
        """Poll from Python (a JS predicate string would need 'unsafe-eval')."""
        deadline = time.monotonic() + timeout
        while self.text(selector) != expected:
            if time.monotonic() > deadline:
                return False
            self.page.wait_for_timeout(100)
        return True

    def mounted(self):
        """djust's client has mounted the view over its WebSocket (the property it checks itself)."""
        return self.page.evaluate(VIEW_MOUNTED_JS)

    def click_and_expect(self, button, selector, expected):
        """Click once the view is mounted and wait for the patch.

        dj-connected is set when the socket opens, a moment before the mount
        reply; a click in between goes to djust's HTTP fallback, which the
        production settings answer with 403. So wait for the mount first.
        """
        deadline = time.monotonic() + 15
        while not self.mounted():
            if time.monotonic() > deadline:
                pytest.fail(f"the view on {self.path()} never mounted", pytrace=False)
            self.page.wait_for_timeout(100)
        self.page.click(button)
        if not self.wait_text(selector, expected, 10):
            seen = self.text(selector)
            pytest.fail(f"{selector} shows {seen!r}, expected {expected!r} on {self.path()}", pytrace=False)

    def expect_counter(self):
        """The counter page is on screen, live, and answers an increment."""
        self.page.wait_for_selector("main[dj-root] #count", timeout=10000)
        assert self.path() == "/"
        self.page.wait_for_selector(CONNECTED, timeout=15000)
        before = int(self.page.text_content("#count").strip())
        self.click_and_expect("button[dj-click=increment]", "#count", str(before + 1))

    def expect_checklist(self):
        """The checklist page is on screen, live, and answers a toggle."""
        self.page.wait_for_selector("main[dj-root] #done-count", timeout=10000)
        assert self.path() == "/checklist/"
        self.page.wait_for_selector(CONNECTED, timeout=15000)
        before = int(self.page.text_content("#done-count").strip())
        step = "button[dj-value-step=backups]"
        ticked = "step-done" in (self.page.get_attribute(step, "class") or "")
        self.click_and_expect(step, "#done-count", str(before - 1 if ticked else before + 1))

    def indicator(self):
        """The label of the header's connection indicator a person can see."""
        labels = self.page.query_selector_all(".connection > span:not(.connection-dot)")
        return [label.text_content().strip() for label in labels if label.is_visible()]

    def close(self):
        self.context.close()


def test_live_navigation_back_and_forward(served, browser, shots):
    _, nginx = served
    visit = Visit(browser, nginx)
    try:
        visit.page.goto(nginx.url + "/", wait_until="load", timeout=20000)
        visit.expect_counter()
        assert visit.indicator() == ["Live"]
        shots(visit.page, "counter")

        visit.page.click("nav a[dj-navigate='/checklist/']")
        visit.expect_checklist()
        # djust's client marks the link of the current page.
        assert visit.page.get_attribute("nav a[dj-navigate='/checklist/']", "aria-current") == "page"
        shots(visit.page, "checklist")

        visit.page.go_back()
        visit.expect_counter()
        visit.page.go_forward()
        visit.expect_checklist()
        visit.page.click("nav a[dj-navigate='/']")
        visit.expect_counter()
        assert visit.indicator() == ["Live"]

        assert len(visit.documents) == 1, f"live navigation reloaded the page: {visit.documents}"
        assert not visit.problems, "the browser reported:\n" + "\n".join(visit.problems)
    finally:
        visit.close()


def test_the_indicator_follows_the_connection(served, browser, shots):
    app, nginx = served
    visit = Visit(browser, nginx)
    try:
        # Arrive by live navigation: the reconnect must mount the page on screen,
        # not the one the document was loaded with.
        visit.page.goto(nginx.url + "/", wait_until="load", timeout=20000)
        visit.expect_counter()
        visit.page.click("nav a[dj-navigate='/checklist/']")
        visit.expect_checklist()
        assert visit.indicator() == ["Live"]

        app.stop()
        try:
            visit.page.wait_for_selector(RECONNECTING, timeout=15000)
            assert visit.indicator() == ["Reconnecting"]
            shots(visit.page, "reconnecting")
        finally:
            app.start()

        # djust's client reconnects with backoff and mounts the view again.
        visit.page.wait_for_selector(CONNECTED, timeout=45000)
        assert visit.indicator() == ["Live"]
        visit.expect_checklist()
        # Only the browser's own errors for the refused WebSocket while the server was down.
        unexpected = [p for p in visit.problems if "WebSocket" not in p]
        assert not unexpected, "the browser reported:\n" + "\n".join(unexpected)
    finally:
        visit.close()
