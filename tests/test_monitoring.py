"""Metrics, scraped by a real Prometheus from the generated service with two workers.

The fast checks hold deploy/monitoring/ to promtool (the rules load and their
unit tests pass) and the dashboard to JSON. The slow ones start Redis (and
Postgres when chosen), bin/serve with two workers, Nginx with the generated
site, a load-balancer stand-in and Debian's Prometheus scraping the service
every second with the shipped configuration and alert rules. Then: /metrics
is refused through both proxies and served directly; after N LiveView sessions
send M events each, Prometheus' HTTP API sums both workers to exactly N x M;
the sessions gauge returns to 0, also after a worker is killed; and every
metric the dashboard and the rules read is one the service exports.
"""

import asyncio
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.hosts import sh_blocks
from tests.monitoring import Prometheus, metric_names, promtool, scrape_names
from tests.stack import LOAD_BALANCER_SITE, AppServer, LiveSession, Nginx, Postgres, RedisServer, wait_for
from tests.test_rehearsal import app_env, arun, http
from tests.variants import REHEARSAL_VARIANTS, answers

SESSIONS = 12
EVENTS_PER_SESSION = 5
# Metrics that get their first series on their first error: the service defines
# them, but a healthy scrape does not show them yet.
ERROR_ONLY = {
    "django_db_errors_total",
    "django_db_new_connection_errors_total",
    "django_cache_get_fail_total",
}


README = "deploy/monitoring/README.md"


def monitoring_dir(project):
    return project.path / "deploy" / "monitoring"


# --- Fast: the files in deploy/monitoring/ -------------------------------------------


@pytest.mark.parametrize("variant", ["default"])
def test_alert_rules_load_and_pass_their_unit_tests(bake, variant):
    project = bake(variant)
    directory = monitoring_dir(project)
    # The README's own commands, as a user types them from the project directory.
    (block,) = [b for b in sh_blocks(project.path, README) if b.heading == "Check the files"]
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text],
        cwd=project.path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{README} :: Check the files\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout + result.stderr
    code, output = promtool("check", "rules", "alerts.yml", cwd=directory)
    assert code == 0 and "8 rules found" in output, output
    rules = yaml.safe_load((directory / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = (directory / "alerts.test.yml").read_text()
    untested = [rule["alert"] for rule in rules if f"alertname: {rule['alert']}" not in tests]
    assert not untested, f"alerts without a promtool unit test: {untested}"


@pytest.mark.parametrize("variant", ["default"])
def test_dashboard_is_json_with_a_query_per_panel(bake, variant):
    dashboard = json.loads((monitoring_dir(bake(variant)) / "dashboard.json").read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(panels) >= 10
    for panel in panels:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert metric_names(target["expr"]), f"no metric in {target['expr']!r}"


# --- Slow: a real Prometheus scraping the live service -----------------------------


class Monitored:
    """The running service, its proxies and the Prometheus scraping it."""

    def __init__(self, project, app, nginx, balancer, prometheus, metrics_dir):
        self.project, self.app, self.nginx, self.balancer = project, app, nginx, balancer
        self.prometheus, self.metrics_dir = prometheus, metrics_dir

    @property
    def ws_url(self):
        return f"wss://localhost:{self.nginx.https_port}/ws/live/"

    @property
    def origin(self):
        return f"https://localhost:{self.nginx.https_port}"

    def scrape(self):
        status, _, body = http(f"http://127.0.0.1:{self.app.port}/metrics")
        assert status == 200, body[:300]
        return body.decode()

    def sessions_by_worker(self):
        """{pid: sessions open} from the workers' own files, read with the project's prometheus-client."""
        script = (
            "import glob, json, os, re, sys\n"
            "from prometheus_client.mmap_dict import MmapedDict\n"
            "out = {}\n"
            "for path in glob.glob(os.path.join(sys.argv[1], 'gauge_livesum_*.db')):\n"
            "    pid = re.search(r'_(\\d+)\\.db$', path).group(1)\n"
            "    out[pid] = sum(row[1] for row in MmapedDict.read_all_values_from_file(path))\n"
            "print(json.dumps(out))\n"
        )
        result = subprocess.run(
            [self.app.python, "-c", script, str(self.metrics_dir)],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return {int(pid): value for pid, value in json.loads(result.stdout).items()}


MONITORED_VARIANTS = [
    pytest.param(REHEARSAL_VARIANTS[name], id=name, marks=pytest.mark.xdist_group(REHEARSAL_VARIANTS[name]))
    for name in ("default", "sqlite_gunicorn")
]


@pytest.fixture(scope="module", params=MONITORED_VARIANTS)
def monitored(request, bake, tmp_path_factory):
    variant = request.param
    project = bake(variant).sync()
    base = tmp_path_factory.mktemp(f"monitored-{variant}")
    (base / "redis").mkdir()
    redis = RedisServer(base / "redis").start()
    postgres = Postgres(base / "pg").start() if answers(variant)["database"] == "postgresql" else None
    metrics_dir = base / "prometheus-multiproc"
    env = app_env(project, redis, postgres, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    app = AppServer(project, env, workers=2, log_path=base / "serve.log")
    started = []
    try:
        app.prepare().start()
        started.append(app)
        site = LOAD_BALANCER_SITE
        if answers(variant)["proxy"] == "nginx":
            site = (project.path / "deploy" / "nginx" / f"{project.slug}.conf").read_text()
        (base / "nginx").mkdir()
        nginx = Nginx(base / "nginx", site, app.port, project.path / "staticfiles", project.slug).start()
        started.append(nginx)
        (base / "balancer").mkdir()
        balancer = Nginx(base / "balancer", LOAD_BALANCER_SITE, app.port).start()
        started.append(balancer)
        # The shipped configuration, pointed at this service and scraping every second.
        config = yaml.safe_load((monitoring_dir(project) / "prometheus.yml").read_text())
        job = config["scrape_configs"][0]["job_name"]
        (base / "prometheus").mkdir()
        prometheus = Prometheus(
            base / "prometheus",
            job,
            [f"127.0.0.1:{app.port}"],
            rule_files=[monitoring_dir(project) / name for name in config["rule_files"]],
        ).start()
        started.append(prometheus)
        prometheus.wait_for_value(f'up{{job="{job}"}}', lambda up: up == 1, 30, "the first scrape")
        yield Monitored(project, app, nginx, balancer, prometheus, metrics_dir)
    finally:
        for server in reversed(started):
            server.stop()
        if postgres:
            postgres.stop()
        redis.stop()


def sum_of(prometheus, expr):
    return prometheus.query(f"sum({expr})") or 0.0


@pytest.mark.slow
def test_metrics_are_refused_through_the_proxies_and_served_directly(monitored):
    # The generated Nginx site answers 404 itself; the load-balancer stand-in
    # passes the request on, and the app refuses it for its X-Forwarded-For.
    for proxy in (monitored.nginx, monitored.balancer):
        status, _, body = http(proxy.url + "/metrics", {"Host": "localhost"})
        assert status == 404, f"{proxy.url}/metrics answered {status}"
        assert b"liveview" not in body
    status, _, _ = http(f"http://127.0.0.1:{monitored.app.port}/metrics", {"X-Forwarded-For": "203.0.113.9"})
    assert status == 404
    assert "liveview_sessions_open" in monitored.scrape()


def trimmed(text):
    """The samples a reader of the report wants to see, without histogram buckets."""
    keep = ("liveview_", "django_http_responses_total_by_status", "django_db_execute_total",
            "django_cache_get", "readiness_")  # fmt: skip
    lines = [line for line in text.splitlines() if line.startswith(keep) and "_bucket" not in line]
    return "\n".join(lines[:40])


@pytest.mark.slow
def test_prometheus_adds_up_events_and_sessions_across_both_workers(monitored):
    prometheus, job = monitored.prometheus, monitored.prometheus.job
    handled = f'liveview_events_total{{job="{job}", outcome="handled"}}'
    timed = f'liveview_event_duration_seconds_count{{job="{job}"}}'
    connects = f'liveview_connects_total{{job="{job}"}}'
    before = {expr: sum_of(prometheus, expr) for expr in (handled, timed, connects)}

    async def scenario():
        sessions = await asyncio.gather(
            *(LiveSession(monitored.ws_url, monitored.origin).open() for _ in range(SESSIONS))
        )
        try:
            for ref in range(1, EVENTS_PER_SESSION + 1):
                replies = await asyncio.gather(*(session.increment(ref) for session in sessions))
                assert all(reply.get("type") == "patch" for reply in replies), replies[:2]
            # All open at once: both workers hold some (their own files say which).
            by_worker = monitored.sessions_by_worker()
            open_now = prometheus.wait_for_value(
                f'sum(liveview_sessions_open{{job="{job}"}})',
                lambda value: value == SESSIONS,
                15,
                "Prometheus to see every session open",
            )
            return by_worker, open_now
        finally:
            await asyncio.gather(*(session.close() for session in sessions))

    by_worker, open_now = arun(scenario(), timeout=120)
    print(f"\nsessions open by worker pid: {by_worker}; Prometheus saw {open_now:g} open")
    live = {pid: count for pid, count in by_worker.items() if count}
    assert sum(live.values()) == SESSIONS
    assert len(live) == 2, f"the sessions all landed on one worker: {by_worker}"

    sent = SESSIONS * EVENTS_PER_SESSION
    counted = prometheus.wait_for_value(
        f"sum({handled})", lambda value: value - before[handled] >= sent, 15, "the events to be counted"
    )
    assert counted - before[handled] == sent, f"sent {sent} events, Prometheus counted {counted}"
    assert sum_of(prometheus, timed) - before[timed] == sent
    assert sum_of(prometheus, connects) - before[connects] == SESSIONS
    prometheus.wait_for_value(
        f'sum(liveview_sessions_open{{job="{job}"}})', lambda value: value == 0, 15, "the sessions to close"
    )
    p95 = prometheus.query(
        "histogram_quantile(0.95, sum by (le) "
        f'(rate(liveview_event_duration_seconds_bucket{{job="{job}"}}[1m])))'
    )
    assert p95 is not None and p95 > 0
    print(f"events sent {sent}, counted {counted - before[handled]:g}; server-side p95 {p95 * 1000:.1f} ms")


@pytest.mark.slow
def test_dashboard_and_rules_read_only_metrics_the_service_exports(monitored):
    # A page, the readiness check and one session give every family its first series.
    http(monitored.nginx.url + "/", {"Host": "localhost"})
    http(f"http://127.0.0.1:{monitored.app.port}/health/")

    async def one_session():
        session = await LiveSession(monitored.ws_url, monitored.origin).open()
        await session.increment(1)
        await session.close()

    arun(one_session(), timeout=60)
    text = monitored.scrape()
    print(f"\n--- a scrape, trimmed ---\n{trimmed(text)}")
    exported = scrape_names(text) | {"up"}
    directory = monitoring_dir(monitored.project)
    dashboard = json.loads((directory / "dashboard.json").read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]
    rules = yaml.safe_load((directory / "alerts.yml").read_text())["groups"][0]["rules"]
    exprs += [rule["expr"] for rule in rules]
    read = set().union(*(metric_names(expr) for expr in exprs))
    unknown = read - exported - ERROR_ONLY
    assert not unknown, f"the dashboard or the rules read metrics the service does not export: {unknown}"
    # The error-only families: defined by the service, just without a series yet.
    defined = defined_metric_names(monitored)
    assert defined >= ERROR_ONLY, ERROR_ONLY - defined
    # Prometheus loaded every rule and none of them is broken.
    groups = monitored.prometheus.api("rules")["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert len(loaded) == len(rules)
    assert all(rule["health"] != "err" for rule in loaded), loaded


def defined_metric_names(monitored):
    """Sample names the service's code registers (in one process, without multi-process mode)."""
    script = (
        "import django, json\n"
        "django.setup()\n"
        "import django_prometheus.db.metrics, core.cache, core.metrics\n"
        "from prometheus_client import REGISTRY\n"
        "print(json.dumps(sorted(REGISTRY._names_to_collectors)))\n"
    )
    env = {key: value for key, value in monitored.app.env.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [monitored.app.python, "-c", script],
        cwd=monitored.project.path,
        env=monitored.project.env(**env),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_sessions_of_a_killed_worker_leave_the_gauge(monitored):
    prometheus, job = monitored.prometheus, monitored.prometheus.job
    gauge = f'sum(liveview_sessions_open{{job="{job}"}})'

    async def scenario():
        sessions = await asyncio.gather(
            *(LiveSession(monitored.ws_url, monitored.origin).open() for _ in range(SESSIONS))
        )
        try:
            prometheus.wait_for_value(gauge, lambda value: value == SESSIONS, 15, "every session open")
            victim = max(monitored.sessions_by_worker().items(), key=lambda item: item[1])[0]
            # SIGKILL: the worker runs no cleanup; only child_exit (gunicorn) or
            # the next worker (uvicorn) can take its sessions out of the gauge.
            os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda: len(monitored.app.worker_pids()) == 2 and victim not in monitored.app.worker_pids(),
                30,
                "a replacement worker",
            )
            return victim
        finally:
            await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)

    victim = arun(scenario(), timeout=120)
    started = time.monotonic()
    prometheus.wait_for_value(gauge, lambda value: value == 0, 30, "the gauge at 0 after a killed worker")
    print(f"\nkilled worker {victim}; gauge back to 0 after {time.monotonic() - started:.1f} s")
    assert victim not in monitored.sessions_by_worker()
