"""Production rehearsal: the generated service, started for real, behind Nginx with TLS.

For each rehearsal variant the module starts Redis (with a password), Postgres
when chosen, the project's own bin/serve with two workers under
config.settings.prod, and Nginx with the generated site (or, for the
load-balancer variant, a TLS stand-in for the balancer), all on 127.0.0.1.
Then it checks what a user and an operator would see. Disruptive checks (Redis
restart, killed worker, SIGTERM) run last, on the default variant.
"""

import asyncio
import json
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.stack import (
    LOAD_BALANCER_SITE,
    AppServer,
    FakeSentry,
    LiveSession,
    Nginx,
    Postgres,
    RedisServer,
    wait_for,
)
from tests.variants import REHEARSAL_VARIANTS, answers

pytestmark = pytest.mark.slow

VARIANTS = [
    pytest.param(variant, id=name, marks=pytest.mark.xdist_group(variant))
    for name, variant in REHEARSAL_VARIANTS.items()
]
IDLE_SECONDS = 65
# Debian's Chromium (never a browser downloaded by `playwright install`).
INSECURE_TLS = ssl.create_default_context()
INSECURE_TLS.check_hostname = False
INSECURE_TLS.verify_mode = ssl.CERT_NONE
NO_REDIRECTS = urllib.request.build_opener(
    urllib.request.HTTPSHandler(context=INSECURE_TLS),
    type("NoRedirect", (urllib.request.HTTPRedirectHandler,), {"redirect_request": lambda *a, **k: None})(),
)


def http(url, headers=None, timeout=10, method="GET", data=None):
    """(status, headers, body) without following redirects or failing on 4xx/5xx."""
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with NO_REDIRECTS.open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def arun(coroutine, timeout=300):
    """Run a coroutine to completion in its own thread (Playwright owns this thread's loop)."""
    box = {}

    def target():
        try:
            box["result"] = asyncio.run(coroutine)
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"scenario still running after {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["result"]


class Stack:
    """Everything one variant runs, plus what the checks need to reach it."""

    def __init__(self, project, redis, app, nginx, postgres, idle):
        self.project, self.redis, self.app, self.nginx = project, redis, app, nginx
        self.postgres, self.idle = postgres, idle

    @property
    def ws_url(self):
        return f"wss://localhost:{self.nginx.https_port}/ws/live/"

    @property
    def origin(self):
        return f"https://localhost:{self.nginx.https_port}"

    def fail(self, what_a_user_sees):
        pytest.fail(f"{what_a_user_sees}\n--- server log (tail) ---\n{self.app.tail()}", pytrace=False)


class IdleSession(threading.Thread):
    """A LiveView session that mounts, sits idle, then sends one event."""

    def __init__(self, url, origin, seconds):
        super().__init__(daemon=True)
        self.url, self.origin, self.seconds = url, origin, seconds
        self.outcome = None

    def run(self):
        async def scenario():
            session = await LiveSession(self.url, self.origin).open()
            try:
                started = time.monotonic()
                # Idle like a person, whose browser still reads what the server
                # sends: other pages' clicks arrive as pushes. A client that
                # stopped reading would stop answering the server's pings too,
                # and uvicorn would close it (1011, keepalive ping timeout).
                while (remaining := started + self.seconds - time.monotonic()) > 0:
                    try:
                        await asyncio.wait_for(session.socket.recv(), remaining)
                    except TimeoutError:
                        break
                reply = await session.increment(1, timeout=15)
                return ("ok", time.monotonic() - started, reply)
            finally:
                await session.close()

        try:
            self.outcome = arun(scenario())
        except Exception as error:
            self.outcome = ("error", repr(error), None)


def app_env(project, redis, postgres, **extra):
    env = project.dotenv()
    env.update(
        REDIS_URL=redis.url,
        DJANGO_ALLOWED_HOSTS="localhost",
        FORWARDED_ALLOW_IPS="127.0.0.1",
        DJUST_TRUSTED_PROXY_COUNT="1",
        SENTRY_DSN="",
        GRACEFUL_TIMEOUT="10",
    )
    if postgres:
        env["DATABASE_URL"] = postgres.url
    else:
        env["DATABASE_URL"] = f"sqlite:///{project.path / 'db.sqlite3'}"
    env.update(extra)
    return env


@pytest.fixture(scope="module", params=VARIANTS)
def stack(request, bake, tmp_path_factory):
    variant = request.param
    project = bake(variant).sync()
    chosen = answers(variant)
    base = tmp_path_factory.mktemp(f"stack-{variant}")
    (base / "redis").mkdir()
    redis = RedisServer(base / "redis").start()
    postgres = Postgres(base / "pg").start() if chosen["database"] == "postgresql" else None
    app = AppServer(project, app_env(project, redis, postgres), workers=2, log_path=base / "serve.log")
    app.prepare().start()
    if chosen["proxy"] == "nginx":
        site = (project.path / "deploy" / "nginx" / f"{project.slug}.conf").read_text()
    else:
        site = LOAD_BALANCER_SITE
    (base / "nginx").mkdir()
    nginx = Nginx(base / "nginx", site, app.port, static_root=project.path / "staticfiles", slug=project.slug)
    nginx.start()
    stack = Stack(project, redis, app, nginx, postgres, idle=None)
    stack.idle = IdleSession(stack.ws_url, stack.origin, IDLE_SECONDS)
    stack.idle.start()
    yield stack
    nginx.stop()
    app.stop()
    if postgres:
        postgres.stop()
    redis.stop()


# --- 1. A browser through Nginx ---------------------------------------------------


def open_counter_page(browser, stack):
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    problems = []
    page.on(
        "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
    )
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    response = page.goto(stack.nginx.url + "/", wait_until="load", timeout=20000)
    return context, page, response, problems


def wait_for_count(page, expected, timeout):
    """Poll the count from Python (a JS predicate string would need 'unsafe-eval')."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        if page.text_content("#count").strip() == expected:
            return True
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(100)
    return False


def click_and_expect(page, stack, expected):
    page.click("button[dj-click=increment]")
    if not wait_for_count(page, expected, 10):
        stack.fail(f"clicked Increment but the count stayed at {page.text_content('#count')!r}")


def test_browser_clicks_the_counter_under_the_csp(stack, browser):
    context, page, response, problems = open_counter_page(browser, stack)
    try:
        policy = response.headers.get("content-security-policy", "")
        assert "script-src 'self' 'nonce-" in policy, policy
        assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        # Wait for the client to connect, then click twice.
        page.wait_for_timeout(1000)
        click_and_expect(page, stack, "1")
        click_and_expect(page, stack, "2")
        assert not problems, "the browser reported errors:\n" + "\n".join(problems)
    finally:
        context.close()


# --- 2. Health, headers, redirects, hosts ----------------------------------------------


def test_health_through_nginx_and_by_ip(stack):
    status, headers, body = http(stack.nginx.url + "/health/", {"Host": "localhost"}, timeout=10)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["status"] == "ok"
    # A load balancer probes the instance by IP over plain HTTP.
    for path in ("/health/", "/health/live/"):
        status, _, body = http(f"http://127.0.0.1:{stack.app.port}{path}")
        assert status == 200, f"probe of {path} by IP got {status}: {body[:200]}"


def test_readiness_holds_while_sessions_come_and_go(stack):
    # Load balancers probe several at a time while browsers close tabs. Each
    # round drops 20 sessions abruptly while six probes are in flight; djust's
    # shared health key and the workers' shared channel-layer queue both made
    # healthy instances answer 503 here (9 of 48 and 44 of 150 probes in two runs
    # before core/health.py gave every probe a key and a channel of its own).
    probe = f"http://127.0.0.1:{stack.app.port}/health/"

    async def round_of_churn():
        sessions = await asyncio.gather(*(LiveSession(stack.ws_url, stack.origin).open() for _ in range(20)))
        probes = [asyncio.create_task(asyncio.to_thread(http, probe)) for _ in range(6)]
        await asyncio.sleep(0.01)
        for session in sessions:
            session.socket.transport.abort()
        return await asyncio.gather(*probes)

    answers = [answer for _ in range(8) for answer in arun(round_of_churn())]
    refused = [body for status, _, body in answers if status != 200]
    assert not refused, f"{len(refused)} of {len(answers)} probes of a healthy stack failed: {refused[:3]}"
    # Probes clean up after themselves (the channel layer's backup queue a moment later).
    wait_for(
        lambda: not stack.redis.cli("--scan", "--pattern", "*health-check*").split(), 15, "probe keys to go"
    )


def test_security_headers_on_a_real_response(stack):
    status, headers, _ = http(stack.nginx.url + "/")
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    script_src = headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    assert "'nonce-" in script_src and "unsafe-inline" not in script_src and "unsafe-eval" not in script_src
    cookies = headers.get_all("Set-Cookie") or []
    assert cookies and all("Secure" in c and "HttpOnly" in c and "SameSite=Lax" in c for c in cookies)


def test_http_redirects_to_https_and_foreign_hosts_are_refused(stack):
    status, headers, _ = http(f"http://127.0.0.1:{stack.nginx.http_port}/", {"Host": "localhost"})
    assert status == 301 and headers["Location"].startswith("https://localhost")
    status, _, _ = http(stack.nginx.url + "/", {"Host": "evil.example"})
    assert status == 400, f"a foreign Host header got {status}"


# --- 4-6. Sessions: workers, Redis, many users, origins ------------------------------


def mounting_workers(stack):
    """The worker processes whose log says they mounted a counter."""
    return {
        json.loads(line)["process"]
        for line in stack.app.log_lines()
        if "mounted view core.views.CounterView" in line
    }


def test_sessions_across_workers_share_redis(stack):
    # The kernel gives each new connection to whichever worker accepts first, and
    # an idle worker can win every time: open sessions in concurrent batches
    # (at most five) until two workers hold some.
    async def scenario():
        sessions = []
        try:
            for _ in range(5):
                batch = (LiveSession(stack.ws_url, stack.origin).open() for _ in range(12))
                sessions += await asyncio.gather(*batch)
                if len(mounting_workers(stack)) >= 2:
                    break
            replies = await asyncio.gather(*(s.increment(1) for s in sessions))
        finally:
            await asyncio.gather(*(s.close() for s in sessions))
        return replies, {s.extensions for s in sessions}

    replies, extensions = arun(scenario())
    assert all(r["type"] == "patch" for r in replies), replies
    # Offered deflate as browsers do, every worker answers without context
    # takeover (config/ws.py), through the proxy too: idle sessions hold no zlib state.
    for answer in extensions:
        assert answer and answer.startswith("permessage-deflate"), extensions
        assert "server_no_context_takeover" in answer, extensions
        assert "client_no_context_takeover" in answer, extensions
    mounted_by = mounting_workers(stack)
    assert len(mounted_by) >= 2, f"all sessions landed on one worker: {mounted_by}"
    keys = stack.redis.cli("--scan", "--pattern", "djust:*").split()
    assert keys, "djust's state is not in Redis"


def test_fifty_concurrent_users_behind_nginx_all_get_answers(stack):
    async def user(number):
        session = LiveSession(stack.ws_url, stack.origin)
        await session.open(timeout=30)
        try:
            return (await session.increment(number, timeout=30))["type"]
        finally:
            await session.close()

    async def scenario():
        return await asyncio.gather(*(user(n) for n in range(1, 51)), return_exceptions=True)

    results = arun(scenario())
    failures = [r for r in results if r != "patch"]
    if failures:
        stack.fail(f"{len(failures)} of 50 users behind Nginx got no answer: {failures[:3]}")


def test_foreign_origin_websocket_is_refused(stack):
    import websockets

    async def scenario():
        session = LiveSession(stack.ws_url, "https://evil.example")
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await session.open()
        return refused.value.response.status_code

    assert arun(scenario()) == 403


# --- 10. Logs ------------------------------------------------------------------------


def test_every_log_line_is_one_json_object(stack):
    lines = stack.app.log_lines()
    assert len(lines) > 10
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line[:300]}")
        assert isinstance(record, dict) and {"time", "level", "message"} <= set(record)
    assert stack.redis.password not in "\n".join(lines), "the Redis password reached the log"


# --- 3. Idle sessions ---------------------------------------------------------------


def test_a_session_idle_for_a_minute_still_answers(stack):
    stack.idle.join(timeout=IDLE_SECONDS + 60)
    assert not stack.idle.is_alive(), "the idle session never finished"
    outcome, detail, reply = stack.idle.outcome
    if outcome != "ok":
        stack.fail(f"a LiveView session idle for {IDLE_SECONDS} s lost its next event: {detail}")
    assert detail >= 60 and reply["type"] == "patch"


# --- 12. Mass disconnect and reconnect ---------------------------------------------------


def test_five_hundred_sessions_close_and_reconnect_at_once(stack):
    url = f"ws://127.0.0.1:{stack.app.port}/ws/live/"
    origin = "http://localhost"
    log_before = len(stack.app.log_lines())

    async def open_many(count):
        sessions = [LiveSession(url, origin, compression=None) for _ in range(count)]
        results = await asyncio.gather(*(s.open(timeout=60) for s in sessions), return_exceptions=True)
        return sessions, [r for r in results if isinstance(r, Exception)]

    async def scenario():
        sessions, errors = await open_many(500)
        assert not errors, f"{len(errors)} of 500 sessions did not mount: {errors[:3]}"
        await asyncio.gather(*(s.close() for s in sessions))
        return sessions

    arun(scenario())

    def groups_drained():
        total = 0
        for key in stack.redis.cli("--scan", "--pattern", "asgi*group*").split():
            total += int(stack.redis.cli("ZCARD", key).strip() or 0)
        return total == 0

    try:
        wait_for(groups_drained, 30, "channel-layer groups to empty")
    except TimeoutError:
        stack.fail("500 sessions closed but the channel layer's groups still list them")
    new_lines = stack.app.log_lines()[log_before:]
    errors = [line for line in new_lines if '"level": "ERROR"' in line or "Traceback" in line]
    if errors:
        stack.fail(f"closing 500 sessions logged {len(errors)} errors, first: {errors[0][:500]}")

    async def reconnect():
        sessions, errors = await open_many(500)
        try:
            assert not errors, f"{len(errors)} of 500 reconnecting sessions were not answered: {errors[:3]}"
        finally:
            await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)

    arun(reconnect())


# --- 11. Sentry ------------------------------------------------------------------------


RAISING_URLS = '''"""Rehearsal only: the production URLs plus one view that fails."""

from config.urls import urlpatterns as production_urlpatterns
from django.urls import path


def fail(request):
    raise RuntimeError("rehearsal: unhandled exception")


urlpatterns = [*production_urlpatterns, path("rehearsal-error/", fail)]
'''
RAISING_SETTINGS = '''"""Rehearsal only: production settings with a failing view added."""

from .prod import *  # noqa: F403

ROOT_URLCONF = "config.rehearsal_urls"
'''


@pytest.mark.xdist_group(REHEARSAL_VARIANTS["default"])
def test_unhandled_exception_reaches_sentry_without_personal_data(bake, tmp_path):
    """A view that raises, in a test-only settings module layered on prod (the project has none)."""
    project = bake(REHEARSAL_VARIANTS["default"]).sync()
    assert answers(REHEARSAL_VARIANTS["default"])["use_sentry"]
    (project.path / "config" / "rehearsal_urls.py").write_text(RAISING_URLS)
    (project.path / "config" / "settings" / "rehearsal.py").write_text(RAISING_SETTINGS)
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    sentry = FakeSentry().start()
    env = app_env(project, redis, None, SENTRY_DSN=sentry.dsn, DJANGO_SECURE_SSL_REDIRECT="false")
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'sentry.sqlite3'}"
    app = AppServer(project, env, workers=1, log_path=tmp_path / "serve.log")
    app.env["DJANGO_SETTINGS_MODULE"] = "config.settings.rehearsal"
    try:
        app.prepare().start()
        cookie = "sessionid=rehearsal-session-cookie-value; csrftoken=rehearsal-csrf-cookie-value"
        status, _, _ = http(
            f"http://127.0.0.1:{app.port}/rehearsal-error/?email=someone@example.org",
            {"Host": "localhost", "Cookie": cookie, "Authorization": "Bearer rehearsal-token"},
        )
        assert status == 500
        wait_for(
            lambda: any('"exception"' in e for e in sentry.envelopes), 20, "the event at the fake Sentry"
        )
    except TimeoutError:
        pytest.fail(f"the error never reached Sentry\n{app.tail()}", pytrace=False)
    finally:
        app.stop()
        sentry.stop()
        redis.stop()
    event = next(e for e in sentry.envelopes if '"exception"' in e)
    assert "rehearsal: unhandled exception" in event
    for secret in (
        "rehearsal-session-cookie-value",
        "rehearsal-csrf-cookie-value",
        "rehearsal-token",
        env["DJANGO_SECRET_KEY"],
        redis.password,
    ):
        assert secret not in event, f"Sentry received {secret[:12]}..."


# --- 7-9. Failures and restarts (default variant) ------------------------------------------


def only_default(stack):
    if stack.project.variant != REHEARSAL_VARIANTS["default"]:
        pytest.skip("disruptive checks run on the default variant")


def test_redis_outage_is_reported_fast_and_recovered_without_restart(stack):
    only_default(stack)
    stack.redis.stop()
    try:
        started = time.monotonic()
        status, _, body = http(f"http://127.0.0.1:{stack.app.port}/health/", timeout=10)
        elapsed = time.monotonic() - started
        assert status == 503, f"/health/ with Redis down answered {status}: {body[:300]}"
        assert elapsed < 5, f"/health/ took {elapsed:.1f} s with Redis down"
        assert http(f"http://127.0.0.1:{stack.app.port}/health/live/")[0] == 200
    finally:
        stack.redis.start()
    wait_for(lambda: http(f"http://127.0.0.1:{stack.app.port}/health/")[0] == 200, 30, "/health/ to recover")

    async def new_sessions():
        sessions = [await LiveSession(stack.ws_url, stack.origin).open() for _ in range(6)]
        try:
            return [(await s.increment(1))["type"] for s in sessions]
        finally:
            await asyncio.gather(*(s.close() for s in sessions))

    try:
        assert arun(new_sessions()) == ["patch"] * 6
    except Exception as error:
        stack.fail(f"after Redis came back, new LiveView sessions failed: {error!r}")


def test_service_keeps_answering_when_a_worker_dies(stack):
    import os
    import signal

    only_default(stack)
    workers = stack.app.worker_pids()
    assert len(workers) >= 2, workers
    os.kill(workers[0], signal.SIGKILL)

    def answering():
        return http(f"http://127.0.0.1:{stack.app.port}/health/live/", timeout=3)[0] == 200

    for _ in range(20):
        assert answering(), "the service stopped answering after one worker was killed"
        time.sleep(0.1)

    async def session():
        live = await LiveSession(stack.ws_url, stack.origin).open()
        try:
            return (await live.increment(1))["type"]
        finally:
            await live.close()

    assert arun(session()) == "patch"


def test_sigterm_drains_requests_closes_sockets_and_the_page_reconnects(stack, browser):
    only_default(stack)
    context, page, _, _ = open_counter_page(browser, stack)
    page.wait_for_timeout(1000)
    click_and_expect(page, stack, "1")

    # An open LiveView session that reports how its socket was closed.
    closed = {}
    ready = threading.Event()

    async def watch_socket():
        import websockets

        live = await LiveSession(stack.ws_url, stack.origin).open()
        ready.set()
        try:
            # Until the close: server pushes come first (the counter's shared
            # figures change as the other pages go).
            for _ in range(50):
                await asyncio.wait_for(live.socket.recv(), 40)
        except websockets.exceptions.ConnectionClosed as error:
            closed["code"] = error.rcvd.code if error.rcvd else None
        except TimeoutError:
            closed["code"] = "still open after 40 s"

    watcher = threading.Thread(target=lambda: asyncio.run(watch_socket()), daemon=True)
    watcher.start()
    assert ready.wait(20), "could not open a LiveView session before SIGTERM"

    # An in-flight request: headers sent, body still coming when SIGTERM arrives.
    in_flight = socket.create_connection(("127.0.0.1", stack.app.port), timeout=15)
    in_flight.sendall(
        b"POST /health/live/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 5\r\nConnection: close\r\n\r\n"
    )
    time.sleep(0.5)
    signalled = time.monotonic()
    stack.app.process.send_signal(15)
    time.sleep(1)
    in_flight.sendall(b"hello")
    answer = in_flight.recv(4096)
    in_flight.close()
    assert answer.startswith(b"HTTP/1.1 200"), f"the request in flight at SIGTERM got {answer[:80]!r}"

    graceful = int(stack.app.env["GRACEFUL_TIMEOUT"])
    try:
        exit_code = stack.app.process.wait(timeout=graceful + 10)
    except Exception:
        stack.fail(f"bin/serve still running {graceful + 10} s after SIGTERM")
    took = time.monotonic() - signalled
    assert exit_code == 0, f"bin/serve exited {exit_code} on SIGTERM\n{stack.app.tail()}"
    assert took < graceful + 5, f"shutdown took {took:.1f} s"
    watcher.join(45)
    assert closed.get("code") in (1001, 1012), (
        f"an open WebSocket got {closed.get('code')!r}, not a close frame"
    )

    stack.app.start()
    try:
        # djust's client reconnects with backoff and mounts again: the count restarts at 0.
        assert wait_for_count(page, "0", 45), "the page never reconnected after the restart"
        click_and_expect(page, stack, "1")
    finally:
        context.close()
