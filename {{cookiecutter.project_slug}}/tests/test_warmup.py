"""A worker warms up when the server starts it, and /health/ says 503 until every worker has."""

import asyncio
import logging
import os
import subprocess
import sys

import pytest

from config.asgi import application
from core import warmup


@pytest.fixture
def phase(monkeypatch):
    """Set this process' warm-up phase for one test (restored afterwards)."""
    return lambda value: monkeypatch.setattr(warmup, "_phase", value)


@pytest.fixture
def markers(monkeypatch, tmp_path):
    """An empty marker directory, as bin/serve leaves it, for a server of two workers."""
    monkeypatch.setenv("WARM_UP_MARKERS", "")  # restored after the test
    monkeypatch.setattr(warmup, "expected_workers", lambda: 2)
    return warmup.prepare(tmp_path)


def dead_pid():
    """The pid of a process that has exited."""
    process = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(process.stdout)


@pytest.mark.django_db
def test_a_worker_warming_up_is_alive_but_not_ready(client, phase, caplog):
    phase("warming")
    with caplog.at_level(logging.INFO, logger="django.request"):
        response = client.get("/health/")
    assert response.status_code == 503
    assert response.json()["status"] == "warming up"
    # Expected on every start: no ERROR line for Sentry to report.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR], caplog.text
    assert client.get("/health/live/").status_code == 200


@pytest.mark.django_db
def test_readiness_waits_for_every_live_worker_of_the_server(client, phase, markers):
    phase("warm")
    (markers / str(os.getpid())).touch()
    # A marker left by a worker that died does not count: its successor is still cold.
    (markers / str(dead_pid())).touch()
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json() == {"status": "warming up", "detail": "warming up: 1 of 2 workers warm"}

    (markers / str(os.getppid())).touch()  # a second live process
    response = client.get("/health/")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "ok"


def test_each_server_has_its_own_markers_and_stale_ones_go(tmp_path, monkeypatch):
    monkeypatch.setenv("WARM_UP_MARKERS", "")
    root = tmp_path / "warm"
    (root / str(dead_pid())).mkdir(parents=True)  # a server that has stopped
    (root / str(os.getppid())).mkdir()  # another server, still running
    (root / str(os.getpid())).mkdir()  # this pid's, from an earlier server
    (root / str(os.getpid()) / "12345").touch()
    own = warmup.prepare(tmp_path)
    assert os.environ["WARM_UP_MARKERS"] == str(own)
    assert sorted(p.name for p in root.iterdir()) == sorted([str(os.getpid()), str(os.getppid())])
    assert list(own.iterdir()) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_lifespan_startup_answers_at_once_then_the_worker_warms(phase, markers, caplog):
    """The real application: startup completes before the warm-up, which renders / and mounts."""
    phase("idle")
    inbound, outbound = asyncio.Queue(), asyncio.Queue()
    server = asyncio.ensure_future(application({"type": "lifespan"}, inbound.get, outbound.put))
    await inbound.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbound.get(), 5))["type"] == "lifespan.startup.complete"
    assert warmup.not_ready_reason() == "warming up"

    with caplog.at_level(logging.INFO, logger="core.warmup"):
        await asyncio.wait_for(warmup._task, 30)
    assert warmup._phase == "warm"
    assert (markers / str(os.getpid())).exists()
    [line] = [record.getMessage() for record in caplog.records if record.name == "core.warmup"]
    assert "GET / 200" in line and "mount core.views.CounterView ok" in line, line

    await inbound.put({"type": "lifespan.shutdown"})
    assert (await asyncio.wait_for(outbound.get(), 5))["type"] == "lifespan.shutdown.complete"
    await asyncio.wait_for(server, 5)
