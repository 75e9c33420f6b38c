"""Prometheus metrics: the LiveView figures, and the /metrics endpoint for the scraper.

django-prometheus measures HTTP requests, the database and the cache (see
MIDDLEWARE, DATABASES and CACHES in the settings). djust 1.2.6 exports nothing
about its WebSockets, so the LiveView figures are defined here and recorded by
core.consumers.StrictLiveViewConsumer, the one place the project owns on that
path. The names below are what deploy/monitoring/ alerts and draws on.

Several workers: bin/serve points PROMETHEUS_MULTIPROC_DIR at an empty
directory before any worker starts; prometheus-client then keeps each
worker's values in a file of its own there, and /metrics adds them up. Without
the variable (tests, manage.py) the values live in this process only.
"""

import glob
import logging
import os
import re
from ipaddress import ip_address

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden, HttpResponseNotFound
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

METRICS_PATH = "/metrics"

# --- LiveView -------------------------------------------------------------------
# A gauge each worker raises and lowers; "livesum" adds up the workers that are
# alive, so a worker that died takes its sessions out of the total.
SESSIONS_OPEN = Gauge(
    "liveview_sessions_open",
    "LiveView WebSockets open now.",
    multiprocess_mode="livesum",
)
CONNECTS = Counter("liveview_connects_total", "LiveView WebSockets accepted.")
DISCONNECTS = Counter(
    "liveview_disconnects_total",
    "LiveView WebSockets closed after being accepted, by close code.",
    ["code"],
)
EVENTS = Counter(
    "liveview_events_total",
    "LiveView events received, by outcome: handled, rejected (djust answered with "
    "an error, e.g. an unknown handler, or dropped it for the rate limit) or malformed "
    "(refused before djust read it).",
    ["outcome"],
)
EVENT_SECONDS = Histogram(
    "liveview_event_duration_seconds",
    "Server time from receiving a handled event to handing its patch to the server.",
    # djust spends about 1 ms per event on a quiet core; the top buckets catch a
    # worker that is saturated or waiting on its database.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PUSHES = Counter(
    "liveview_server_pushes_total",
    "Server pushes (djust.push) that reached a session of this service.",
)
BACKEND_ERRORS = Counter(
    "liveview_backend_errors_total",
    "Errors from the Redis services LiveView sessions depend on: the channel layer "
    "(joining and leaving groups) and djust's state backend.",
    ["backend"],
)
READINESS_FAILURES = Counter(
    "readiness_check_failures_total",
    "Failed dependency probes of /health/, by check.",
    ["check"],
)
READINESS_CHECKS = Counter("readiness_checks_total", "Answers given by /health/.")

# Series that exist at 0 from the start: Prometheus' increase() cannot see the
# first error of a series that appears with the value 1.
for _backend in ("channel_layer", "state_backend"):
    BACKEND_ERRORS.labels(backend=_backend)
for _check in ("database", "cache", "state_backend", "channel_layer"):
    READINESS_FAILURES.labels(check=_check)
# Bound once: a labels() lookup per event would cost more than the count itself.
EVENTS_HANDLED = EVENTS.labels(outcome="handled")
EVENTS_REJECTED = EVENTS.labels(outcome="rejected")
EVENTS_MALFORMED = EVENTS.labels(outcome="malformed")

# Close codes worth telling apart; any other code counts as "other", so a client
# cannot create new time series by choosing its own codes.
KNOWN_CLOSE_CODES = {
    1000: "1000",  # normal close (the user left the page)
    1001: "1001",  # going away (tab closed, navigation)
    1006: "1006",  # dropped without a close frame (network, proxy timeout)
    1011: "1011",  # server error
    1012: "1012",  # server restart (a deploy)
    4403: "4403",  # djust: Origin or permission refused
    4429: "4429",  # djust: rate limit
}


def close_code_label(code):
    """The `code` label for a close code: one of KNOWN_CLOSE_CODES or "other"."""
    return KNOWN_CLOSE_CODES.get(code, "other")


def is_channel_layer_error(error):
    """True for an error raised by Redis under the channel layer (redis-py, channels-redis)."""
    return type(error).__module__.startswith(("redis.", "channels_redis."))


def record_readiness(report):
    """Count one /health/ answer and each of its failed checks."""
    READINESS_CHECKS.inc()
    for check, result in report.items():
        if result != "ok":
            READINESS_FAILURES.labels(check=check).inc()


class ErrorCounter(logging.Handler):
    """Counts ERROR records of a logger as backend errors.

    djust's Redis state backend catches its own failures (a lost connection, a
    value it cannot decode) and logs them at ERROR instead of raising: its log
    is the only signal it gives, so the count is taken there.
    """

    def __init__(self, backend):
        super().__init__(level=logging.ERROR)
        self.counter = BACKEND_ERRORS.labels(backend=backend)

    def emit(self, record):
        self.counter.inc()


def install():
    """Wire what cannot be declared in settings; called once per process by CoreConfig.ready."""
    logging.getLogger("djust.state_backends").addHandler(ErrorCounter("state_backend"))
    forget_dead_workers()


# --- Several workers ----------------------------------------------------------------
LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def forget_dead_workers():
    """Drop the live gauges of workers that no longer run.

    Gunicorn reports a dead worker to config/gunicorn.py's child_exit, which
    does this for that pid. Uvicorn's own supervisor replaces a dead worker but
    tells nobody, so each new worker also looks for files left by pids that are
    gone. Counters and histograms of dead workers stay: their counts happened.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    for path in glob.glob(os.path.join(directory, "gauge_live*.db")):
        match = LIVE_GAUGE_FILE.search(path)
        if match and not pid_alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), directory)


def pid_alive(pid):
    """True if a process with this pid exists (it may belong to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- The endpoint --------------------------------------------------------------------
def scrape():
    """The exposition text: every worker's values added up in multi-process mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry)


def scraper_allowed(request):
    """Why a /metrics request is refused, as a response, or None to serve it.

    SECURITY WARNING: the figures name every view and show traffic and error
    rates; they are for the monitoring network only.
    - A request that came through the public proxy (Nginx or the load balancer)
      carries X-Forwarded-For, which both always add and the client cannot
      remove: 404, as if there were no such page. The Nginx site also answers
      404 for /metrics itself, before proxying.
    - A direct request (Prometheus scraping HOST:PORT) must come from an address
      in METRICS_ALLOWED_IPS: 403 otherwise.
    """
    if "HTTP_X_FORWARDED_FOR" in request.META:
        return HttpResponseNotFound()
    try:
        client = ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return HttpResponseForbidden()
    if not any(client in network for network in settings.METRICS_ALLOWED_IPS):
        return HttpResponseForbidden()
    return None


class MetricsMiddleware:
    """Serve /metrics to the scraper before host validation and the HTTPS redirect.

    Prometheus scrapes each worker host by its private address over plain HTTP,
    like a load-balancer probe: further down the stack that would be a 400 (the
    address is not in ALLOWED_HOSTS) or a 301 to HTTPS. Reading the files of a
    few workers takes well under a millisecond, so it runs on the event loop.
    """

    async_capable = True
    sync_capable = False

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request):
        if request.path_info != METRICS_PATH:
            return await self.get_response(request)
        refusal = scraper_allowed(request)
        if refusal is not None:
            return refusal
        response = HttpResponse(scrape(), content_type=CONTENT_TYPE_LATEST)
        response["Cache-Control"] = "no-store"
        return response
