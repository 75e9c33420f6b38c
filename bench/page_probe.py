"""Time GET / in-process, inside a generated project's venv (bench/page.py runs it).

    cd GENERATED && .venv/bin/python /path/to/bench/page_probe.py --requests 300 --json out.json
    ... page_probe.py --bare --json bare.json     # bench/baselines/bare_django.py instead

Each request is one ASGI call into the application bin/serve runs (config.asgi:
the same middleware, under the settings in DJANGO_SETTINGS_MODULE), on this
process' event loop, one at a time: no server, socket or proxy. Requests come
as a browser's through the proxy would: the site's Host and X-Forwarded-Proto:
https. "first visit" sends no cookie; "second visit" sends back the cookies the
first answer set, the same ones every time.

While it runs, named functions are wrapped with a timer (this process only;
nothing in the project or in djust is changed on disk), so each request's time
is broken down by what it spent in them. The times are inclusive and some nest
(the session save at the response includes its SQL and Redis commands), so the
rows do not add up to the total. Variants change one setting and build a new
handler, so "what is X worth" is also measured by leaving X out.

Only the standard library and what the generated project installs are used:
this file runs with the project's Python, not the benchmark's.
"""

import argparse
import asyncio
import functools
import importlib
import importlib.util
import inspect
import json
import os
import statistics
import sys
import time
from pathlib import Path

SPENT = {}  # component -> [seconds, calls] during the current request


def timed(label, function):
    """function, adding its time (and one call) to SPENT[label]; sync or async."""
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def async_wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return await function(*args, **kwargs)
            finally:
                entry = SPENT.setdefault(label, [0.0, 0])
                entry[0] += time.perf_counter() - start
                entry[1] += 1

        return async_wrapper

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            entry = SPENT.setdefault(label, [0.0, 0])
            entry[0] += time.perf_counter() - start
            entry[1] += 1

    return wrapper


def wrap(label, owner, name):
    """Time owner.name (a class or module attribute) under label, if it exists."""
    original = getattr(owner, name, None)
    if original is None:
        return False
    setattr(owner, name, timed(label, original))
    return True


class TimedPattern:
    """A compiled regex whose sub() is timed (re.Pattern's methods cannot be replaced)."""

    def __init__(self, label, pattern):
        self.label, self.pattern = label, pattern
        self.sub = timed(label, pattern.sub)

    def __getattr__(self, name):
        return getattr(self.pattern, name)


def instrument(view_class):
    """Wrap what a page GET spends its time in. Returns the labels that found their target."""
    from django.contrib.sessions.middleware import SessionMiddleware
    from django.db.backends.utils import CursorWrapper
    from django.middleware.csrf import CsrfViewMiddleware
    from django_prometheus import middleware as prometheus
    from redis import client as redis_sync
    from redis.asyncio import client as redis_async

    done = []

    def add(label, owner, *names):
        if any([wrap(label, owner, name) for name in names]):
            done.append(label)

    add("SQL queries (all)", CursorWrapper, "execute", "executemany")
    add("Redis commands, sync client (all)", redis_sync.Redis, "execute_command")
    add("Redis commands, sync client (all)", redis_sync.Pipeline, "execute")
    add("Redis commands, asyncio client (all)", redis_async.Redis, "execute_command")
    add("Redis commands, asyncio client (all)", redis_async.Pipeline, "execute")
    add("session: SessionMiddleware response (save + cookie)", SessionMiddleware, "process_response")
    add("CSRF middleware (request, view, response)", CsrfViewMiddleware, "process_request")
    add("CSRF middleware (request, view, response)", CsrfViewMiddleware, "process_view")
    add("CSRF middleware (request, view, response)", CsrfViewMiddleware, "process_response")
    for cls in (prometheus.PrometheusBeforeMiddleware, prometheus.PrometheusAfterMiddleware):
        add(
            "Prometheus request metrics",
            cls,
            "process_request",
            "process_view",
            "process_response",
        )
    try:
        from csp.middleware import CSPMiddleware

        add("django-csp: nonce + header", CSPMiddleware, "process_request", "process_response")
    except ImportError:
        pass
    try:
        from core.middleware import InlineScriptNonceMiddleware

        InlineScriptNonceMiddleware.TAG = TimedPattern(
            "nonce rewrite of inline <script> tags", InlineScriptNonceMiddleware.TAG
        )
        done.append("nonce rewrite of inline <script> tags")
    except (ImportError, AttributeError):
        pass
    try:
        from djust.state_backends.redis import RedisStateBackend

        add("djust state backend: set (Redis SETEX)", RedisStateBackend, "set")
        add("djust state backend: get", RedisStateBackend, "get")
    except ImportError:
        pass
    try:
        from djust.template.backend import DjustTemplateBackend

        add("djust template backend: get_template (reads the file)", DjustTemplateBackend, "get_template")
    except ImportError:
        pass
    if view_class is not None:
        add("djust view: whole GET", view_class, "get")
        add("djust view: mount", view_class, "mount")
        add("djust view: render_full_template (render 1)", view_class, "render_full_template")
        add("djust view: render_with_diff (render 2, baseline)", view_class, "render_with_diff")
        add("djust view: get_template (source)", view_class, "get_template")
    # The session store's create() is found through the engine in use, per variant.
    return done


class Caller:
    """One-at-a-time ASGI GETs against an application, with timings."""

    def __init__(self, application, host):
        self.application, self.host = application, host.encode()

    async def get(self, path="/", cookies=None):
        headers = [
            (b"host", self.host),
            (b"x-forwarded-proto", b"https"),
            (b"x-forwarded-for", b"203.0.113.7"),
            (b"user-agent", b"bench.page"),
            (b"accept", b"text/html"),
        ]
        if cookies:
            headers.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        sent_body = False
        never = asyncio.Event()
        answer = {"status": None, "headers": [], "body": b""}

        async def receive():
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await never.wait()  # the client never disconnects early

        async def send(message):
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        SPENT.clear()
        start = time.perf_counter()
        await self.application(scope, receive, send)
        answer["seconds"] = time.perf_counter() - start
        answer["spent"] = {label: list(value) for label, value in SPENT.items()}
        return answer


def set_cookies(answer):
    cookies = {}
    for name, value in answer["headers"]:
        if name.lower() == b"set-cookie":
            pair = value.decode().split(";", 1)[0]
            key, _, val = pair.partition("=")
            cookies[key.strip()] = val.strip()
    return cookies


def summary(values_ms):
    """Median and spread of a list of milliseconds."""
    ordered = sorted(values_ms)
    n = len(ordered)

    def q(p):
        return ordered[min(n - 1, int(p * (n - 1) + 0.5))]

    return {
        "n": n,
        "median_ms": round(statistics.median(ordered), 3),
        "p10_ms": round(q(0.10), 3),
        "p90_ms": round(q(0.90), 3),
        "iqr_ms": round(q(0.75) - q(0.25), 3),
    }


class Series:
    """The timed GETs of one kind (a variant, first or second visit), gathered block by block."""

    def __init__(self, caller, visit):
        self.caller, self.visit = caller, visit
        self.cookies = None
        self.totals, self.block_medians, self.parts = [], [], {}
        self.bytes, self.set_cookie = 0, []

    async def prepare(self, warmup):
        """One GET for the cookies (second visits send them back), then untimed ones."""
        first = await self.caller.get("/")
        if first["status"] != 200:
            raise SystemExit(f"GET / answered {first['status']}: {first['body'][:300]!r}")
        self.bytes, self.set_cookie = len(first["body"]), sorted(set_cookies(first))
        self.cookies = set_cookies(first) if self.visit == "second" else None
        for _ in range(warmup):
            await self.caller.get("/", self.cookies)

    async def block(self, requests):
        block = []
        for _ in range(requests):
            answer = await self.caller.get("/", self.cookies)
            if answer["status"] != 200:
                raise SystemExit(f"GET / answered {answer['status']} during the run")
            block.append(answer["seconds"] * 1000)
            for label, (seconds, calls) in answer["spent"].items():
                entry = self.parts.setdefault(label, {"ms": [], "calls": []})
                entry["ms"].append(seconds * 1000)
                entry["calls"].append(calls)
        self.totals.extend(block)
        self.block_medians.append(statistics.median(block))

    def result(self):
        n = len(self.totals)
        result = summary(self.totals)
        result["round_medians_ms"] = [round(m, 3) for m in self.block_medians]
        result["bytes"] = self.bytes
        result["set_cookie_on_first_answer"] = self.set_cookie
        result["parts"] = {
            label: {
                # Median over all requests, counting a request that never called it as 0.
                "median_ms": round(statistics.median(entry["ms"] + [0.0] * (n - len(entry["ms"]))), 3),
                "calls_per_request": round(sum(entry["calls"]) / n, 2),
            }
            for label, entry in sorted(self.parts.items())
        }
        return result


async def measure_interleaved(runs, args):
    """runs: [(name, visit, Series, enter, leave)]; blocks taken in turn, so noise hits all alike."""
    for _, _, series, enter, leave in runs:
        enter()
        try:
            await series.prepare(args.warmup)
        finally:
            leave()
    per_block = max(1, args.requests // args.rounds)
    for number in range(args.rounds):
        for _, _, series, enter, leave in runs:
            enter()
            try:
                await series.block(per_block)
            finally:
                leave()
        log(f"block {number + 1} of {args.rounds} done")


def variant_settings(name, base_middleware):
    """(settings overrides, description) for each variant the probe knows."""
    without = lambda *names: [m for m in base_middleware if m not in names]  # noqa: E731
    return {
        "as configured": ({}, "the settings in DJANGO_SETTINGS_MODULE, unchanged"),
        "session cached_db": (
            {"SESSION_ENGINE": "django.contrib.sessions.backends.cached_db"},
            "sessions in the cache (Redis) and written through to the database",
        ),
        "session cache": (
            {"SESSION_ENGINE": "django.contrib.sessions.backends.cache"},
            "sessions in the cache (Redis) only",
        ),
        "session db": (
            {"SESSION_ENGINE": "django.contrib.sessions.backends.db"},
            "sessions in the database only",
        ),
        "session signed_cookies": (
            {"SESSION_ENGINE": "django.contrib.sessions.backends.signed_cookies"},
            "the session in a signed cookie (djust's view state travels in it)",
        ),
        "no nonce rewrite": (
            {"MIDDLEWARE": without("core.middleware.InlineScriptNonceMiddleware")},
            "without InlineScriptNonceMiddleware (not a production option: the CSP then blocks djust)",
        ),
        "no Prometheus middleware": (
            {
                "MIDDLEWARE": without(
                    "core.request_metrics.PrometheusBeforeMiddleware",
                    "core.request_metrics.PrometheusAfterMiddleware",
                )
            },
            "without the request metrics",
        ),
        "no WhiteNoise": (
            {"MIDDLEWARE": without("whitenoise.middleware.WhiteNoiseMiddleware")},
            "without WhiteNoiseMiddleware",
        ),
    }[name]


VARIANTS = [
    "as configured",
    "session cached_db",
    "session cache",
    "session db",
    "session signed_cookies",
    "no nonce rewrite",
    "no Prometheus middleware",
    "no WhiteNoise",
]


def time_session_creation():
    """Time SessionStore.create() of every engine, where each defines it (not inherited twice)."""
    label = "session: create (djust, first visit: first save)"
    for engine in ("cache", "cached_db", "db", "signed_cookies"):
        store = importlib.import_module(f"django.contrib.sessions.backends.{engine}").SessionStore
        if "create" in vars(store):
            store.create = timed(label, store.create)


async def run_project(args):
    import django

    django.setup()
    from django.conf import settings
    from django.core.handlers.asgi import ASGIHandler
    from django.test.utils import override_settings
    from django.urls import resolve

    view_class = getattr(resolve("/").func, "view_class", None)
    labels = instrument(view_class)
    time_session_creation()
    host = (settings.ALLOWED_HOSTS or ["localhost"])[0].lstrip(".")
    results = {"settings_module": os.environ.get("DJANGO_SETTINGS_MODULE"), "host": host, "variants": {}}
    results["session_engine_configured"] = settings.SESSION_ENGINE
    results["instrumented"] = labels
    base_middleware = list(settings.MIDDLEWARE)
    runs, described = [], {}
    for name in args.variants:
        overrides, description = variant_settings(name, base_middleware)
        override = override_settings(**overrides)
        override.enable()
        try:
            # A new handler reads MIDDLEWARE and SESSION_ENGINE again.
            caller = Caller(ASGIHandler(), host)
            described[name] = {"description": description, "session_engine": settings.SESSION_ENGINE}
        finally:
            override.disable()
        for visit in ("first", "second"):
            runs.append((name, visit, Series(caller, visit), override.enable, override.disable))
    await measure_interleaved(runs, args)
    for name, visit, series, _, _ in runs:
        entry = results["variants"].setdefault(name, dict(described[name]))
        entry[visit] = series.result()
        log(f"{name:26s} {visit} visit: median {entry[visit]['median_ms']} ms")
    return results


async def run_bare(args, repo):
    path = repo / "bench" / "baselines" / "bare_django.py"
    spec = importlib.util.spec_from_file_location("bare_django", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bare_django"] = module  # its own ROOT_URLCONF
    spec.loader.exec_module(module)
    caller = Caller(module.application, "localhost")
    runs = [
        ("bare", visit, Series(caller, visit), lambda: None, lambda: None) for visit in ("first", "second")
    ]
    await measure_interleaved(runs, args)
    entry = {"description": "bench/baselines/bare_django.py: one view, no middleware"}
    for _, visit, series, _, _ in runs:
        entry[visit] = series.result()
        log(f"{'bare Django view':26s} {visit} visit: median {entry[visit]['median_ms']} ms")
    return {"variants": {"bare Django view": entry}}


def log(text):
    print(f"[page_probe] {text}", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--bare", action="store_true", help="time bench/baselines/bare_django.py instead")
    parser.add_argument("--json", required=True, help="write the results here (stdout has the app's logs)")
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    repo = Path(__file__).resolve().parent.parent
    if args.bare:
        results = asyncio.run(run_bare(args, repo))
    else:
        sys.path.insert(0, os.getcwd())
        results = asyncio.run(run_project(args))
    Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
