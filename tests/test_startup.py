"""A fresh server is honest about warming up: /health/ says 503 "warming up" until every worker is warm.

Real services (tests/stack.py): Redis, PostgreSQL for the default variant, the
project's own bin/serve under config.settings.prod with two workers, for the
uvicorn variant and the Gunicorn one. From the moment bin/serve is started,
/health/ is polled every 10 ms until it answers 200; every answer before that
must be a 503 that says "warming up" (never a dependency failure), and each
worker must have logged its warm-up (its first GET / rendered, its LiveView
mounted) in its own process: readiness waits for all of them, so the first
visitor after readiness does not pay for that work. Figures are printed; no
timing is asserted.
"""

import http.client
import json
import threading
import time

import pytest

from tests.stack import AppServer, Postgres, RedisServer
from tests.test_rehearsal import app_env
from tests.variants import answers

pytestmark = pytest.mark.slow

VARIANTS = ["default", "py3.12-sqlite-gunicorn-lb-sticky-nosentry"]
PARAMS = [pytest.param(v, id=v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS]


def get(port, path, headers=None):
    """Status and JSON body (None when not JSON) of GET path; (None, None) when nothing answers."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path, headers={"Host": "localhost", **(headers or {})})
        response = connection.getresponse()
        body = response.read()
        connection.close()
    except OSError:
        return None, None
    try:
        return response.status, json.loads(body)
    except ValueError:
        return response.status, None


def warm_lines(app):
    """The workers' warm-up lines from the server's JSON log: {pid: message}."""
    lines = {}
    for line in app.log_lines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("logger") == "core.warmup":
            lines[record["process"]] = record["message"]
    return lines


@pytest.mark.parametrize("variant", PARAMS)
def test_fresh_workers_answer_503_warming_up_until_warm(variant, bake, tmp_path):
    project = bake(variant).sync()
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis").start()
    postgres = Postgres(tmp_path / "pg").start() if answers(variant)["database"] == "postgresql" else None
    app = AppServer(project, app_env(project, redis, postgres), workers=2, log_path=tmp_path / "serve.log")
    try:
        app.prepare()
        started = time.monotonic()
        # start() returns once /health/live/ answers; poll /health/ meanwhile, from the first instant.
        starter = threading.Thread(target=app.start, daemon=True)
        starter.start()
        answers_seen, live_at = [], None
        deadline = started + 60
        while time.monotonic() < deadline:
            status, body = get(app.port, "/health/")
            if status is not None:
                answers_seen.append((round(time.monotonic() - started, 3), status, body))
            if status == 200:
                break
            if app.process is not None and app.process.poll() is not None:
                pytest.fail(f"bin/serve exited {app.process.returncode}:\n{app.tail()}")
            time.sleep(0.01)
        ready_at = time.monotonic() - started
        starter.join(30)
        live_at = get(app.port, "/health/live/")[0]
        page_status, _ = get(app.port, "/", {"X-Forwarded-Proto": "https"})
        workers = app.worker_pids()
        for _ in range(50):  # the log is written by the workers; give it a moment
            lines = warm_lines(app)
            if set(workers) <= set(lines):
                break
            time.sleep(0.1)
        before = [a for a in answers_seen if a[1] != 200]
        print(
            f"\n{variant}: /health/ 200 after {ready_at:.2f} s; {len(before)} answers before it "
            f"(first at {before[0][0] if before else '-'} s: {before[0][2] if before else '-'}); "
            f"warm-ups: {lines}"
        )

        assert answers_seen and answers_seen[-1][1] == 200, f"no /health/ 200: {answers_seen[-5:]}"
        assert before, "no /health/ answer came before the workers were warm: nothing shown about warming up"
        for _, status, body in before:
            assert status == 503 and body and body.get("status") == "warming up", (status, body)
        assert live_at == 200
        # Each worker rendered the page and mounted its LiveView itself, before the
        # server could answer ready (readiness waits for every worker's marker).
        assert len(workers) == 2 and set(workers) <= set(lines), (workers, lines, app.tail())
        for pid in workers:
            assert "GET / 200" in lines[pid] and "mount core.views.CounterView ok" in lines[pid], lines[pid]
        assert page_status == 200
    finally:
        app.stop()
        if postgres:
            postgres.stop()
        redis.stop()
