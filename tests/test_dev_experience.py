"""What a developer sees while working on a generated project, and what production keeps.

Development logs are lines a person reads; production logs are JSON objects a
shipper parses, and neither carries terminal escape codes it did not ask for.
"""

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.stack import AppServer, free_port, port_open, wait_for
from tests.test_bake import prod_env

DEV = {"DJANGO_SETTINGS_MODULE": "config.settings.dev", "PYTHONUNBUFFERED": "1"}

# "10:23:21 INFO     django.channels.server: HTTP GET / 200 [...]"
READABLE_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) +[\w.]+: (?P<message>.+)$")

# Daphne's runserver colours its request lines itself when stdout is a terminal.
COLOURED_REQUEST = "\x1b[32;1mHTTP GET / 200 [0.01, 127.0.0.1:5000]\x1b[0m"


def variant_param(variant):
    return pytest.param(variant, id=variant, marks=pytest.mark.xdist_group(variant))


def get(url):
    """Status of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class DevServer:
    """`manage.py runserver` under config.settings.dev, as a developer starts it."""

    def __init__(self, project):
        self.project = project
        self.port = free_port()
        self.log_path = project.path / f"runserver-{self.port}.log"
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [".venv/bin/python", "manage.py", "runserver", f"127.0.0.1:{self.port}"],
            cwd=self.project.path,
            env=self.project.env(**DEV),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(lambda: port_open(self.port), 60, f"runserver on port {self.port}")
        return self

    def __exit__(self, *exc):
        # runserver's autoreloader runs the server in a child: stop the whole group.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()

    def text(self):
        return self.log_path.read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.xdist_group("default")
def test_dev_server_prints_readable_lines_each_once(synced):
    project = synced("default")
    project.run("python", "manage.py", "migrate", "--noinput", env=DEV)
    with DevServer(project) as server:
        assert get(server.url + "/") == 200
        assert get(server.url + "/no-such-page/") == 404
        wait_for(lambda: "HTTP GET /no-such-page/ 404" in server.text(), 15, "the 404 request line")
        text = server.text()

    lines = [line for line in text.splitlines() if line.strip()]
    assert "\x1b" not in text, "escape codes in output that is not a terminal"
    assert not [line for line in lines if line.lstrip().startswith("{")], text
    logged = [READABLE_LINE.match(line) for line in lines]
    messages = [match["message"] for match in logged if match]
    assert any(m.startswith("HTTP GET / 200 ") for m in messages), text
    assert any(m.startswith("HTTP GET /no-such-page/ 404 ") for m in messages), text
    # Each thing is said once: djust's print and its log record of the same
    # text, and the file watcher of runserver's autoreloader parent, are gone.
    assert len(messages) == len(set(messages)), text
    assert sum("Hot reload enabled" in line for line in lines) == 1, text
    assert sum("Hot reload server started" in line for line in lines) == 1, text


@pytest.mark.slow
@pytest.mark.xdist_group("default")
def test_migrate_under_dev_settings_starts_no_hot_reload(synced):
    project = synced("default")
    result = project.run("python", "manage.py", "migrate", "--noinput", env=DEV)
    output = result.stdout + result.stderr
    assert "HotReload" not in output, output
    assert "Running migrations:" in output


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant", [variant_param("default"), variant_param("py3.13-sqlite-gunicorn-nosentry")]
)
def test_prod_log_lines_are_json_objects_without_escape_codes(synced, redis_url, variant):
    project = synced(variant)
    env = prod_env(project, redis_url)
    # A record as Daphne's runserver writes it on a terminal, under prod settings.
    logged = project.run(
        "python",
        "-c",
        "import django, logging, sys; django.setup(); "
        f"logging.getLogger('django.channels.server').info({COLOURED_REQUEST!r})",
        env=env,
    )
    # And the real production server: bin/serve, a health probe, a refused request.
    server = AppServer(project, env, workers=1)
    server.manage("collectstatic", "--noinput", "-v0")
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert get(base + "/health/live/") == 200
        # By IP, not the production host name: Django refuses it (400), and logs that too.
        get(base + "/no-such-page/")
        wait_for(lambda: "/no-such-page/" in "\n".join(server.log_lines()), 15, "the 404 log line")
    finally:
        server.stop()

    lines = logged.stdout.splitlines() + server.log_lines()
    records = []
    for line in lines:
        if not line.strip():
            continue
        assert "\x1b" not in line and "\\u001b" not in line, line
        record = json.loads(line)
        assert isinstance(record, dict), line
        records.append(record)
    assert {"level", "logger", "message"} <= records[0].keys()
    assert any(r["message"] == "HTTP GET / 200 [0.01, 127.0.0.1:5000]" for r in records), lines
    assert any("/no-such-page/" in r["message"] for r in records), lines
