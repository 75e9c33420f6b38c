"""Redis at its memory limit (issue 11, requirement 5): open sessions keep working.

The generated service with two workers and PostgreSQL on loopback, with the
Redis layout the template generates (compose.yaml's two services and their
eviction policies): the main Redis (cache, sessions, djust state) is given a
small maxmemory, twenty LiveView sessions are opened, then a bounded flood of
cookieless page views fills it until it evicts. Each of those page views
writes a session to the cache and a djust state to Redis (shared/DJUST-FACTS.md
items 7 and 20), all with a TTL, so volatile-lru evicts the least recently used
keys with a TTL.

channels-redis sets a TTL on its keys too (group_expiry on groups, expiry on
queues). When the channel layer shares the main Redis, the groups of idle
sessions are among its least recently used keys, and a push to them is lost
without an error. The same flood runs against that one-instance layout (what
CHANNEL_REDIS_URL's default gives) and the losses are printed: the before and
after of the two-instance layout, whose own assertions are the requirement.
"""

import asyncio
import http.client
import json
import threading
import time

import pytest
import yaml

from tests.stack import AppServer, LiveSession, RedisServer, direct_env

VARIANT = "default"
# With the other tests of this variant: one bake and one virtualenv per test process.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(VARIANT)]
SESSIONS = 20
# Page views measured before the limit is set: Redis bytes per cookieless view.
SAMPLE_VIEWS = 600
# The main Redis' maxmemory: what it holds with the sessions open, plus this.
HEADROOM = 1024 * 1024
# The flood: bounded in count and in time, stopped early after the limit is
# well passed (evictions of at least EVICT_TARGET keys).
FLOOD_VIEWS = 6000
FLOOD_SECONDS = 120
FLOOD_THREADS = 12
EVICT_TARGET = 1000
PUSH_MARKER = 424242
COUNTER_VIEW = "core.views.CounterView"


# --- Redis -------------------------------------------------------------------------------


def redis_info(redis, section):
    """INFO <section> as a dict of its fields."""
    fields = {}
    for line in redis.cli("INFO", section).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            fields[key] = value
    return fields


def used_memory(redis):
    return int(redis_info(redis, "memory")["used_memory"])


# MEMORY USAGE of every key matching ARGV[1], summed inside Redis (one round trip).
KEY_BYTES = (
    "local t = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
    "t = t + redis.call('MEMORY', 'USAGE', k) end return t"
)


def key_bytes(redis, pattern):
    """Bytes the keys matching pattern take (values, key names and Redis' per-key overhead)."""
    return int(redis.cli("EVAL", KEY_BYTES, "0", pattern).strip())


def evicted_keys(redis):
    return int(redis_info(redis, "stats")["evicted_keys"])


def channel_groups(redis):
    """{group key: members} of channels-redis' groups (prefix "asgi")."""
    keys = [key for key in redis.cli("--scan", "--pattern", "asgi:group:*").split() if key]
    return {key: set(redis.cli("ZRANGE", key, "0", "-1").split()) for key in keys}


def compose_policies(project):
    """{service: (maxmemory, maxmemory-policy)} of the Redis services in compose.yaml."""
    services = yaml.safe_load((project.path / "compose.yaml").read_text())["services"]
    policies = {}
    for name, service in services.items():
        command = service.get("command") or []
        if command[:1] == ["redis-server"]:
            options = dict(zip(command[1::2], command[2::2], strict=False))
            policies[name] = (options.get("--maxmemory"), options.get("--maxmemory-policy"))
    return policies


# --- Load --------------------------------------------------------------------------------


class PageViews(threading.Thread):
    """Cookieless GET / on a connection of its own, until told to stop or a bound is hit."""

    def __init__(self, port, limit, deadline, stopping, path="/"):
        super().__init__(daemon=True)
        self.port, self.limit, self.deadline, self.stopping, self.path = port, limit, deadline, stopping, path
        self.statuses = []

    def run(self):
        connection = None
        for _ in range(self.limit):
            if self.stopping.is_set() or time.monotonic() > self.deadline:
                break
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                # No Cookie header: each view is a new visitor with a new session.
                connection.request("GET", self.path, headers={"Host": "localhost"})
                response = connection.getresponse()
                response.read()
                self.statuses.append(response.status)
            except (OSError, http.client.HTTPException) as error:
                self.statuses.append(type(error).__name__)
                connection = None
        if connection is not None:
            connection.close()


class HealthPoller(threading.Thread):
    """GET /health/ every 0.2 s while the flood runs (bounded by the same deadline)."""

    def __init__(self, port, deadline, stopping):
        super().__init__(daemon=True)
        self.port, self.deadline, self.stopping = port, deadline, stopping
        self.answers = []

    def run(self):
        for _ in range(int(FLOOD_SECONDS / 0.2) + 10):
            if self.stopping.is_set() or time.monotonic() > self.deadline:
                break
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request("GET", "/health/", headers={"Host": "localhost"})
                response = connection.getresponse()
                self.answers.append((response.status, response.read()[:300]))
            except (OSError, http.client.HTTPException) as error:
                self.answers.append((type(error).__name__, b""))
            finally:
                connection.close()
            time.sleep(0.2)


def page_views(port, count, threads=FLOOD_THREADS, seconds=FLOOD_SECONDS, until=None):
    """count cookieless views over `threads` connections; (statuses, seconds taken).

    until() is polled every 0.2 s and ends the flood early when true.
    """
    stopping = threading.Event()
    deadline = time.monotonic() + seconds
    share = -(-count // threads)
    workers = [PageViews(port, share, deadline, stopping) for _ in range(threads)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers) and time.monotonic() < deadline + 15:
        if until is not None and until():
            stopping.set()
        time.sleep(0.2)
    stopping.set()
    for worker in workers:
        worker.join(15)
    took = time.monotonic() - started
    return [status for worker in workers for status in worker.statuses], took


# --- Sessions ----------------------------------------------------------------------------


def open_session(port, number):
    """A LiveView session straight to the service; its own client address (per-IP cap)."""
    return LiveSession(
        f"ws://127.0.0.1:{port}/ws/live/",
        "http://localhost",
        # bin/serve believes X-Forwarded-For from 127.0.0.1 (FORWARDED_ALLOW_IPS):
        # twenty sessions from twenty addresses stay under djust's 10 per address.
        additional_headers={"X-Forwarded-For": f"198.18.0.{number + 1}"},
    )


class OpenSessions(threading.Thread):
    """SESSIONS LiveView sessions held open in an event loop of their own.

    The test thread says what to do next with commands: "check" sends one event
    per session and then waits for a push to reach each one (the push is sent
    by the test thread between the two, see push()).
    """

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.opened = threading.Event()
        self.failure = None
        self.commands = []
        self.command_ready = threading.Event()
        self.results = {}
        self.done = threading.Event()

    def run(self):
        try:
            asyncio.run(asyncio.wait_for(self.scenario(), 600))
        except BaseException as error:  # reported by the test thread
            self.failure = error
            self.opened.set()
            self.done.set()

    async def next_command(self):
        await asyncio.to_thread(self.command_ready.wait, 300)
        self.command_ready.clear()
        return self.commands.pop(0) if self.commands else "close"

    async def scenario(self):
        sessions = []
        try:
            for number in range(SESSIONS):
                sessions.append(await open_session(self.port, number).open())
            self.opened.set()
            while (command := await self.next_command()) != "close":
                if command == "events":
                    replies = await asyncio.gather(
                        *(session.increment(1000 + i, timeout=15) for i, session in enumerate(sessions)),
                        return_exceptions=True,
                    )
                    self.results["events"] = [
                        reply.get("type") if isinstance(reply, dict) else repr(reply) for reply in replies
                    ]
                elif command == "pushes":
                    replies = await asyncio.gather(
                        *(session.receive(pushed, timeout=10) for session in sessions),
                        return_exceptions=True,
                    )
                    self.results["pushes"] = [isinstance(reply, dict) for reply in replies]
                self.done.set()
        finally:
            for session in sessions:
                await session.close()

    def do(self, command, timeout=120):
        self.done.clear()
        self.commands.append(command)
        self.command_ready.set()
        if not self.done.wait(timeout):
            raise TimeoutError(f"the sessions did not finish {command!r} within {timeout} s")
        if self.failure:
            raise self.failure
        return self.results.get(command)

    def close(self):
        self.commands.append("close")
        self.command_ready.set()
        self.join(60)


def pushed(message):
    """True for the patch that carries the test's server push."""
    return str(PUSH_MARKER) in json.dumps(message)


PUSH = f"""
from djust.push import push_to_view
push_to_view({COUNTER_VIEW!r}, state={{"count": {PUSH_MARKER}}})
print("pushed")
"""


# --- The stack ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(bake):
    return bake(VARIANT).sync()


def service_env(project, main, channels, postgres):
    return direct_env(project, main, postgres, channels=channels)


def flood_layout(project, postgres, workdir, two_instances):
    """Run the whole scenario on one layout; return its figures."""
    policies = compose_policies(project)
    main_policy = policies["redis"][1]
    (workdir / "main").mkdir()
    main = RedisServer(workdir / "main").start()
    channels = main
    started = [main]
    app = sessions = None
    try:
        main.cli("CONFIG", "SET", "maxmemory-policy", main_policy)
        if two_instances:
            (workdir / "channels").mkdir()
            channels = RedisServer(workdir / "channels").start()
            started.append(channels)
            channel_limit, channel_policy = policies["redis-channels"]
            channels.cli("CONFIG", "SET", "maxmemory", channel_limit)
            channels.cli("CONFIG", "SET", "maxmemory-policy", channel_policy)
        app = AppServer(
            project, service_env(project, main, channels, postgres), workers=2, log_path=workdir / "serve.log"
        )
        app.prepare()
        app.start()
        figures = {"layout": "two instances" if two_instances else "one instance"}

        # Bytes per open LiveView session. used_memory (what maxmemory compares)
        # includes the clients' buffers; key_bytes() counts the keys alone.
        instances = [main, channels] if two_instances else [main]
        used_before = sum(used_memory(redis) for redis in instances)
        state_before, channel_before = key_bytes(main, "djust:*"), key_bytes(channels, "asgi*")
        sessions = OpenSessions(app.port)
        sessions.start()
        if not sessions.opened.wait(120) or sessions.failure:
            pytest.fail(
                f"{SESSIONS} LiveView sessions could not be opened: {sessions.failure!r}\n{app.tail()}"
            )
        time.sleep(0.5)
        figures["Redis bytes per LiveView session"] = (
            sum(used_memory(redis) for redis in instances) - used_before
        ) // SESSIONS
        figures["djust state key bytes per LiveView session"] = (
            key_bytes(main, "djust:*") - state_before
        ) // SESSIONS
        figures["channel-layer key bytes per LiveView session"] = (
            key_bytes(channels, "asgi*") - channel_before
        ) // SESSIONS

        # The groups now: ZRANGE counts as a use for Redis' LRU clock, so after
        # this every page view below writes keys more recently used than these.
        groups_before = channel_groups(channels)
        assert groups_before, "no channel-layer group in Redis with the sessions open"

        # Bytes per cookieless page view, before any limit. The same number of
        # connections as the flood, so the workers' Redis connection pools have
        # grown to their size under load before the limit is set: maxmemory
        # counts the clients' buffers too, and only keys can be evicted.
        before, keys_before = used_memory(main), key_bytes(main, "*")
        statuses, _ = page_views(app.port, SAMPLE_VIEWS)
        ok = statuses.count(200)
        assert ok == len(statuses), f"page views failed before any limit: {statuses[:5]}\n{app.tail()}"
        figures["bytes per cookieless page view"] = (used_memory(main) - before) // ok
        figures["key bytes per cookieless page view"] = (key_bytes(main, "*") - keys_before) // ok
        figures["clients on the main Redis"] = int(redis_info(main, "clients")["connected_clients"])

        # The limit, then the flood; /health/ polled throughout.
        limit = used_memory(main) + HEADROOM
        main.cli("CONFIG", "SET", "maxmemory", str(limit))
        stopping = threading.Event()
        poller = HealthPoller(app.port, time.monotonic() + FLOOD_SECONDS + 30, stopping)
        poller.start()
        statuses, took = page_views(app.port, FLOOD_VIEWS, until=lambda: evicted_keys(main) >= EVICT_TARGET)
        time.sleep(1)
        stopping.set()
        poller.join(15)
        groups_after = channel_groups(channels)
        figures.update(
            {
                "maxmemory (bytes)": limit,
                "flood views": len(statuses),
                "flood failures": len(statuses) - statuses.count(200),
                "flood rate (views/s)": round(len(statuses) / took),
                "keys evicted (main)": evicted_keys(main),
                "keys evicted (channel instance)": evicted_keys(channels)
                if two_instances
                else "same instance",
                "health answers": len(poller.answers),
                "health not 200": [a for a in poller.answers if a[0] != 200][:3],
                "channel groups before": len(groups_before),
                "channel groups lost": sorted(set(groups_before) - set(groups_after)),
                "channel memberships lost": sum(
                    len(members - groups_after.get(key, set())) for key, members in groups_before.items()
                ),
            }
        )

        # What users see afterwards: their clicks answered, a server push delivered.
        figures["events answered"] = sessions.do("events").count("patch")
        app.manage("shell", "-c", PUSH, timeout=60)
        figures["pushes received"] = sum(sessions.do("pushes"))
        if two_instances:
            figures.update(when_the_channel_redis_is_full(app, channels, channel_limit))
        figures["server log"] = app.tail(15)
        return figures
    finally:
        if sessions is not None:
            sessions.close()
        if app is not None:
            app.stop()
        for server in started:
            server.stop()


def when_the_channel_redis_is_full(app, channels, limit):
    """With the channel instance over its maxmemory (noeviction): what a new visitor and a probe see."""
    channels.cli("CONFIG", "SET", "maxmemory", "1")
    try:
        connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
        try:
            connection.request("GET", "/health/", headers={"Host": "localhost"})
            response = connection.getresponse()
            health = (response.status, json.loads(response.read()).get("checks", {}).get("channel_layer"))
        finally:
            connection.close()
        try:
            asyncio.run(asyncio.wait_for(open_session(app.port, SESSIONS + 1).open(timeout=10), 20))
            new_session = "mounted"
        except Exception as error:
            new_session = f"refused: {type(error).__name__}"
    finally:
        channels.cli("CONFIG", "SET", "maxmemory", limit)
    return {
        "health with the channel Redis full": health,
        "new session with the channel Redis full": new_session,
    }


def report(figures):
    shown = {key: value for key, value in figures.items() if key != "server log"}
    print(f"\nRedis at its memory limit: {json.dumps(shown, default=str)}")


def test_one_instance_layout_loses_channel_keys(project, postgres, tmp_path):
    """Measurement only: the old layout (channel layer in the evicting Redis)."""
    figures = flood_layout(project, postgres, tmp_path, two_instances=False)
    report(figures)
    assert figures["keys evicted (main)"] > 0, "the flood never filled Redis: raise FLOOD_VIEWS"


def test_two_instance_layout_keeps_every_session_working(project, postgres, tmp_path):
    figures = flood_layout(project, postgres, tmp_path, two_instances=True)
    report(figures)
    log = figures["server log"]
    assert figures["keys evicted (main)"] > 0, (
        f"the flood of {figures['flood views']} page views never filled the main Redis "
        f"(maxmemory {figures['maxmemory (bytes)']}): nothing was tested"
    )
    assert figures["keys evicted (channel instance)"] == 0, "the channel layer's Redis evicted keys"
    assert not figures["channel groups lost"] and not figures["channel memberships lost"], (
        "users with a page open would miss live updates: channel-layer groups were evicted "
        f"({figures['channel groups lost']}, {figures['channel memberships lost']} memberships)"
    )
    assert not figures["health not 200"], (
        f"a load balancer would have taken the host out: /health/ answered {figures['health not 200']}\n{log}"
    )
    assert figures["flood failures"] == 0, f"visitors saw errors during the flood\n{log}"
    assert figures["events answered"] == SESSIONS, (
        f"only {figures['events answered']} of {SESSIONS} open pages answered a click after the flood\n{log}"
    )
    status, channel_check = figures["health with the channel Redis full"]
    assert status == 503 and channel_check != "ok", (
        f"with the channel layer's Redis full, /health/ answered {status} ({channel_check}): "
        "a load balancer would keep sending users to a host whose LiveViews cannot connect"
    )
    assert figures["new session with the channel Redis full"].startswith("refused"), (
        "a session mounted while the channel layer could not record it: its pushes would be lost"
    )
    assert figures["pushes received"] == SESSIONS, (
        f"only {figures['pushes received']} of {SESSIONS} open pages received a server push "
        f"after the flood\n{log}"
    )


# Seconds: group_expiry (DJUST_SESSION_TTL) for the test below, and how much longer the page stays open.
SHORT_EXPIRY, OPEN_PAST_EXPIRY = 5, 4


def test_a_page_open_longer_than_group_expiry_still_receives_pushes(project, postgres, tmp_path):
    """Expiry, not eviction: channels-redis forgets a group member group_expiry seconds after it joined.

    djust joins a session's groups once, at mount; core/consumers.py joins them
    again while the socket is open. Without that, this push was lost.
    """
    main = RedisServer(tmp_path).start()
    app = None
    try:
        env = service_env(project, main, main, postgres)
        env["DJUST_SESSION_TTL"] = str(SHORT_EXPIRY)
        app = AppServer(project, env, workers=1, log_path=tmp_path / "serve.log")
        app.prepare()
        app.start()

        async def scenario():
            session = await open_session(app.port, 0).open()
            try:
                await asyncio.sleep(SHORT_EXPIRY + OPEN_PAST_EXPIRY)
                groups = channel_groups(main)
                await asyncio.to_thread(app.manage, "shell", "-c", PUSH, timeout=60)
                try:
                    await session.receive(pushed, timeout=10)
                    return groups, "received"
                except TimeoutError:
                    return groups, "lost"
            finally:
                await session.close()

        groups, outcome = asyncio.run(asyncio.wait_for(scenario(), 120))
        opened = SHORT_EXPIRY + OPEN_PAST_EXPIRY
        print(f"\npush to a page open {opened} s, group_expiry {SHORT_EXPIRY} s: {outcome}; groups: {groups}")
        assert outcome == "received", (
            f"a page open longer than DJUST_SESSION_TTL ({SHORT_EXPIRY} s here) stopped receiving live "
            f"updates: its channel-layer groups were {groups}\n{app.tail(15)}"
        )
    finally:
        if app is not None:
            app.stop()
        main.stop()
