"""LiveView events that query PostgreSQL keep working across a database restart.

The generated consumer (core/consumers.py, core/db_connections.py) skips
channels' per-message database-connection cleanup while a worker holds no
connection. This test proves the cleanup still does its job when one is open:
the default variant's own bin/serve under config.settings.prod (two workers,
CONN_MAX_AGE 60 with health checks, real Redis and PostgreSQL), and LiveView
sessions on a view whose `def` handler asks PostgreSQL for its backend pid
(added to this test's own bake of the project; the demo's handlers never touch
the database).

1. Before: every event is answered, showing a backend of pg_stat_activity.
2. PostgreSQL stops (fast shutdown: every connection is cut). Events sent
   while it is down fail, as they do under channels' own cleanup: the
   handler's query cannot connect. djust answers them with an error frame and
   the socket stays open.
3. PostgreSQL starts again. Every later event is answered, showing a new
   backend: each worker dropped its dead connection (the health check that
   the cleanup arms) and connected again. No event after the restart fails.

The sessions stay open throughout: the same sockets, the same mounted views.
A second test runs bin/serve with DJANGO_CONN_MAX_AGE=1: an event after 1.5 s
is served by a new backend, the old connection closed for its age.

Both fail with the cleanup removed from the consumer (tried: after the
restart every event failed; past its age the connection was kept).
"""

import asyncio
import json
import re
import shutil

import pytest
import websockets

from tests.conftest import bake_variant
from tests.stack import AppServer, LiveSession, Postgres, RedisServer, wait_for
from tests.test_rehearsal import app_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default")]

SESSIONS = 4
EVENTS = 3
# djust answers a handled event with a patch, or "noop" when the page did not change.
HANDLED = {"patch", "noop"}
BACKEND = re.compile(r'id="backend">(\d+)<')

# Appended to the bake's core/views.py: djust mounts views of core.views only.
PROBE_VIEW = '''

from django.db import connection  # noqa: E402


class DatabaseProbeView(LiveView):
    """Shows the PostgreSQL backend that served the last event (tests only)."""

    template_name = "core/probe.html"
    login_required = False

    def mount(self, request, **kwargs):
        self.backend = 0

    @event_handler()
    def query(self, **kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.backend = cursor.fetchone()[0]

    def get_context_data(self, **kwargs):
        return {"backend": self.backend}
'''
PROBE_TEMPLATE = (
    '<main dj-root dj-view="core.views.DatabaseProbeView">'
    '<p>Backend: <output id="backend">{{ backend }}</output></p></main>\n'
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("event-database")
    project = bake_variant("default", base / "project")
    with (project.path / "core" / "views.py").open("a") as views:
        views.write(PROBE_VIEW)
    (project.path / "core" / "templates" / "core" / "probe.html").write_text(PROBE_TEMPLATE)
    project.sync()
    (base / "redis").mkdir()
    redis = RedisServer(base / "redis").start()
    postgres = Postgres(base / "pg").start()
    app = AppServer(project, app_env(project, redis, postgres), workers=2, log_path=base / "serve.log")
    try:
        app.prepare().start()
        yield app, postgres, redis, base
    finally:
        app.stop()
        postgres.stop()
        shutil.rmtree(postgres.directory, ignore_errors=True)
        redis.stop()


def app_backends(postgres):
    """Pids of the PostgreSQL backends serving the app's user now."""
    query = f"\"SELECT pid FROM pg_stat_activity WHERE usename = '{postgres.user}'\""
    psql = [f"{postgres.bin}/psql", "-h", str(postgres.directory), "-p", str(postgres.port)]
    result = postgres._as_postgres(*psql, "-U", "postgres", "-d", postgres.database, "-Atc", query)
    return {int(pid) for pid in result.stdout.split()}


def start_again(postgres):
    """pg_ctl start with the options Postgres.start() used (its data directory survives)."""
    options = (
        f"-p {postgres.port} -k {postgres.directory} -c listen_addresses={postgres.host}"
        " -c fsync=off -c max_connections=300"
    )
    postgres._as_postgres(
        f"{postgres.bin}/pg_ctl", "-D", str(postgres.data), "-o", f"'{options}'",
        "-l", str(postgres.directory / "pg.log"), "-w", "start",
    )  # fmt: skip


async def open_probe(url, origin):
    """A LiveSession mounted on the probe view.

    LiveSession mounts with the URL "/", and the consumer mounts the view of
    the page's URL (the counter's): the probe has no URL, so this one says none.
    """
    session = LiveSession(url, origin)
    session.socket = await websockets.connect(url, origin=origin, ping_interval=None)
    hello = json.loads(await asyncio.wait_for(session.socket.recv(), 15))
    assert hello["type"] == "connect", hello
    mount = {"type": "mount", "view": "core.views.DatabaseProbeView", "params": {}, "url": "/probe/"}
    await session.socket.send(json.dumps(mount))
    mounted = await session.receive(lambda m: m.get("type") in ("mount", "error"), 15)
    assert mounted["type"] == "mount", mounted
    return session


async def query(session, ref):
    """Send the probe's event; return its answer (a patch, or djust's error frame)."""
    await session.socket.send(json.dumps({"type": "event", "event": "query", "params": {}, "ref": ref}))
    return await session.receive(lambda m: m.get("ref") == ref or m.get("type") == "error", 15)


async def shown_backend(session):
    """The backend pid the page shows now (djust answers request_html with the page)."""
    await session.socket.send(json.dumps({"type": "request_html"}))
    reply = await session.receive(lambda m: m["type"] in ("html_recovery", "error"), 10)
    found = BACKEND.search(reply.get("html", ""))
    return int(found.group(1)) if found else None


async def round_of_events(sessions, first_ref):
    """EVENTS events per session; (answers, the backend each page shows afterwards)."""
    answers = []
    for number in range(EVENTS):
        for session in sessions:
            answers.append(await query(session, first_ref + number))
    return answers, [await shown_backend(session) for session in sessions]


def test_events_that_query_the_database_survive_a_postgres_restart(served):
    app, postgres, _, _ = served
    origin = "http://localhost"
    url = f"ws://127.0.0.1:{app.port}/ws/live/"

    async def scenario():
        sessions = [await open_probe(url, origin) for _ in range(SESSIONS)]
        try:
            answers, before = await round_of_events(sessions, 1)
            assert all(answer["type"] in HANDLED for answer in answers), answers
            backends_before = app_backends(postgres)
            assert set(before) <= backends_before, (before, backends_before)

            postgres.stop()
            down = [await query(session, 100) for session in sessions]
            start_again(postgres)

            answers, after = await round_of_events(sessions, 200)
            backends_after = app_backends(postgres)
            return before, down, answers, after, backends_before, backends_after
        finally:
            await asyncio.gather(*(session.close() for session in sessions))

    before, down, answers, after, backends_before, backends_after = asyncio.run(scenario())
    print(f"backends shown before the restart {sorted(set(before))}, after {sorted(set(after))}")
    print(f"answers while PostgreSQL was down: {[frame['type'] for frame in down]}")
    # While the database is down an event may fail, and is answered rather than dropped.
    assert all(frame["type"] in HANDLED | {"error"} for frame in down), down
    # After it is back, none fails: every worker replaced its dead connection.
    assert all(answer["type"] in HANDLED for answer in answers), answers
    assert set(after) <= backends_after, (after, backends_after)
    assert not set(after) & backends_before, "a page still shows a backend from before the restart"
    wait_for(lambda: app.process.poll() is None, 1, "bin/serve to be still running")


def test_a_connection_older_than_conn_max_age_is_replaced(served):
    """With DJANGO_CONN_MAX_AGE=1, an event 1.5 s after the last is served by a new backend.

    Without any cleanup before the message, the worker would keep its first
    connection for as long as it lives.
    """
    _, postgres, redis, base = served
    project_env = app_env(served[0].project, redis, postgres, DJANGO_CONN_MAX_AGE="1")
    app = AppServer(served[0].project, project_env, workers=1, log_path=base / "serve-max-age.log")
    app.start()
    url, origin = f"ws://127.0.0.1:{app.port}/ws/live/", "http://localhost"

    async def scenario():
        session = await open_probe(url, origin)
        try:
            shown = []
            for ref in (1, 2, 3):
                if ref == 3:
                    await asyncio.sleep(1.5)  # the connection is now older than CONN_MAX_AGE
                answer = await query(session, ref)
                assert answer["type"] in HANDLED, answer
                # A noop means the page, and so the backend, did not change.
                patched = re.findall(r"'text': '(\d+)'", str(answer.get("patches")))
                shown.append(int(patched[-1]) if patched else shown[-1])
            return shown
        finally:
            await session.close()

    try:
        first, second, after_max_age = asyncio.run(scenario())
    finally:
        app.stop()
    print(f"backends: {first}, {second}, then {after_max_age} after 1.5 s")
    assert first == second, "two events in quick succession should share one connection"
    assert after_max_age not in (None, first)
