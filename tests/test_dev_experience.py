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

from tests.stack import VIEW_MOUNTED_JS, AppServer, free_port, launch_chromium, port_open, wait_for
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


# --- djust's developer tools under the dev policy ------------------------------


# Collects every CSP violation from the first script the page runs.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective}: ${event.sample || event.blockedURI}`);
});
"""

# base.py's policy, as production sends it (the nonce differs per response).
PROD_POLICY = (
    "default-src 'self'; script-src 'self' 'nonce-*'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)


def directives(policy):
    """{"script-src": "'self' 'nonce-*'", ...} with the nonce masked."""
    policy = re.sub(r"'nonce-[^']+'", "'nonce-*'", policy)
    return dict(part.strip().partition(" ")[::2] for part in policy.split(";") if part.strip())


@pytest.mark.slow
@pytest.mark.xdist_group("default")
def test_djust_debug_panel_rows_expand_under_dev_csp(synced):
    from playwright.sync_api import expect, sync_playwright

    project = synced("default")
    project.run("python", "manage.py", "migrate", "--noinput", env=DEV)
    with DevServer(project) as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            console_errors = []
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.add_init_script(RECORD_VIOLATIONS)
            response = page.goto(server.url + "/", wait_until="load", timeout=20000)
            policy = directives(response.headers["content-security-policy"])
            # An event gives the debug panel's Events tab a row with details, once
            # the view is mounted (a click before goes to djust's HTTP fallback).
            page.wait_for_function(VIEW_MOUNTED_JS, timeout=20000)
            page.click("button[dj-click=increment]")
            expect(page.locator("#count")).to_have_text("1", timeout=10000)
            page.click("#djust-debug-button")
            page.click("[data-tab=events]")
            row = page.locator(".event-item.expandable").first
            row.locator(".event-header").click()
            expect(row).to_have_class(re.compile(r"\bexpanded\b"), timeout=5000)
            violations = page.evaluate("window.__violations")
        finally:
            browser.close()

    assert violations == [], violations
    assert not [text for text in console_errors if "Content Security Policy" in text], console_errors
    # Only inline handler attributes are relaxed: <script> elements still need the nonce.
    assert policy["script-src-attr"] == "'unsafe-inline'"
    assert policy["script-src"] == "'self' 'nonce-*'"


@pytest.mark.xdist_group("default")
def test_prod_csp_is_the_strict_policy(synced):
    project = synced("default")
    script = (
        "import django; django.setup(); from django.test import RequestFactory; "
        "from csp.middleware import CSPMiddleware; from django.http import HttpResponse; "
        "request = RequestFactory().get('/'); middleware = CSPMiddleware(lambda r: HttpResponse()); "
        "middleware.process_request(request); str(request.csp_nonce); "
        "print(middleware.process_response(request, HttpResponse())['Content-Security-Policy'])"
    )
    result = project.run("python", "-c", script, env=prod_env(project))
    assert directives(result.stdout.strip()) == directives(PROD_POLICY)
