"""Sessions in Redis only (config.settings.prod, issue 14): what a Redis restart does to visitors.

The generated service (default variant: PostgreSQL, two workers) runs under
config.settings.prod with its own bin/serve, Redis and PostgreSQL on loopback.
A visitor loads the counter page, comes back with the cookies it was given and
clicks through djust's HTTP event route (a POST that Django's CSRF check
guards and whose view state comes from the session). Then Redis restarts:

- with its data (what RDB or AOF persistence gives): the session is still there;
- without it (the generated Redis setup keeps no data on disk, or a flush): the
  session is gone, the visitor is given a new one on the next request, the
  CSRF token in its own cookie still works and LiveView pages mount; the
  counter starts over, as docs/deployment.md ("Sessions") says;
- with DJANGO_SESSIONS_IN_DATABASE=true, a restart without data loses nothing:
  the session is read back from the database.
"""

import asyncio
import http.client
import json

import pytest

from tests.stack import AppServer, LiveSession, RedisServer, direct_env, wait_for

VARIANT = "default"
# With the other tests of this variant: one bake and one virtualenv per test process.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(VARIANT)]
SESSION_KEYS = "cache:*django.contrib.sessions.cache*"
SESSION_MODEL = "from django.contrib.sessions.models import Session; "


class Visitor:
    """A browser's cookie jar, talking HTTP straight to bin/serve."""

    def __init__(self, port):
        self.port = port
        self.cookies = {}
        self.set_cookies = {}  # what the last answer set

    def request(self, method, path="/", body=None, headers=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            sent = {"Host": "localhost", **(headers or {})}
            if self.cookies:
                sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            payload = response.read()
            self.set_cookies = {}
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                self.set_cookies[name.strip()] = rest.split(";", 1)[0]
            self.cookies.update(self.set_cookies)
            return response.status, payload
        finally:
            connection.close()

    def load_page(self):
        status, body = self.request("GET")
        assert status == 200, body[:500]
        return body

    def click(self):
        """The counter's increment through djust's HTTP route: (status, the visitor's count)."""
        status, body = self.request(
            "POST",
            body=json.dumps({"event": "increment", "params": {}}).encode(),
            headers={
                "Content-Type": "application/json",
                "X-CSRFToken": self.cookies.get("csrftoken", ""),
            },
        )
        return status, body

    @property
    def session(self):
        return self.cookies.get("sessionid")


def session_rows(app, key=None):
    """Rows in the database's django_session table (only `key`'s, if given).

    Each worker's warm-up (core/warmup.py) loads a page too, so with sessions in
    the database there are rows besides the visitor's.
    """
    query = f"filter(session_key={key!r})" if key else "all()"
    output = app.manage("shell", "-c", SESSION_MODEL + f"print(Session.objects.{query}.count())").stdout
    return int(output.strip().splitlines()[-1])


def session_keys(redis):
    return [key for key in redis.cli("--scan", "--pattern", SESSION_KEYS).split() if key]


def restart_redis(redis, keep_data):
    """Stop and start Redis on the same port; with keep_data, from a snapshot taken just before."""
    if keep_data:
        redis.cli("SAVE")
    redis.stop()
    if not keep_data:
        (redis.directory / "dump.rdb").unlink(missing_ok=True)
    redis.start()


def mounts(port):
    """True when a LiveView page mounts over the WebSocket."""

    async def scenario():
        session = LiveSession(f"ws://127.0.0.1:{port}/ws/live/", "http://localhost")
        await session.open(timeout=15)
        await session.close()
        return True

    return asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.fixture(scope="module")
def project(bake):
    return bake(VARIANT).sync()


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def serve(project, postgres, redis, tmp_path):
    """serve(**env) -> the service started on this test's Redis, stopped after the test."""
    started = []

    def start(**extra):
        env = direct_env(project, redis, postgres, **extra)
        app = AppServer(project, env, workers=2, log_path=tmp_path / "serve.log")
        app.prepare()
        # Rows another test wrote would hide this one's.
        app.manage("shell", "-c", SESSION_MODEL + "Session.objects.all().delete()")
        app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def page_loads_again(visitor, app):
    """The first page load after a Redis restart (pooled connections retry once): 200 within 20 s."""
    wait_for(lambda: visitor.request("GET")[0] == 200, 20, f"GET / after the Redis restart\n{app.tail()}")


def test_sessions_are_in_redis_only_and_survive_a_restart_with_the_data(serve, redis):
    app = serve()
    visitor = Visitor(app.port)
    visitor.load_page()
    first = visitor.session
    assert first and "csrftoken" in visitor.cookies, visitor.set_cookies
    assert any(key.endswith(first) for key in session_keys(redis)), session_keys(redis)
    # Nothing written to the database on a page view (cached_db wrote twice).
    assert session_rows(app) == 0

    # The second visit keeps its session, and djust's HTTP route restores the
    # view state saved in it: the count goes on from where it was.
    visitor.load_page()
    assert visitor.session == first
    status, body = visitor.click()
    assert status == 200, body[:500]
    status, body = visitor.click()
    assert status == 200, body[:500]
    print(f"before the restart: {body[:200]!r}")

    restart_redis(redis, keep_data=True)
    page_loads_again(visitor, app)
    # The same session: no new cookie was needed.
    assert visitor.session == first
    status, body = visitor.click()
    assert status == 200, body[:500]
    assert mounts(app.port)


def test_a_restart_without_the_data_gives_a_new_session_and_csrf_still_works(serve, redis):
    app = serve()
    visitor = Visitor(app.port)
    visitor.load_page()
    first, token = visitor.session, visitor.cookies["csrftoken"]
    assert visitor.click()[0] == 200

    restart_redis(redis, keep_data=False)
    assert session_keys(redis) == []
    page_loads_again(visitor, app)
    # The old session is gone: the visitor is given a new one, as on a first visit.
    assert visitor.session and visitor.session != first, visitor.set_cookies
    # The CSRF token lives in its own cookie, not in the session: still accepted.
    assert visitor.cookies["csrftoken"] == token
    status, body = visitor.click()
    assert status == 200, body[:500]
    assert mounts(app.port)


def test_sessions_in_database_survive_a_restart_without_the_data(serve, redis):
    app = serve(DJANGO_SESSIONS_IN_DATABASE="true")
    visitor = Visitor(app.port)
    visitor.load_page()
    first = visitor.session
    assert session_rows(app, first) == 1

    restart_redis(redis, keep_data=False)
    page_loads_again(visitor, app)
    # Read back from the database: the same session, no new cookie.
    assert visitor.session == first
    assert visitor.click()[0] == 200
