"""What each thread hop and always-on cost of one LiveView event is worth, in-process.

    uv run --group test python -m bench.hops --output /tmp/hops.json

Bakes the default project (or uses --project), starts a real Redis
(tests/stack.py) and runs this same file inside the project's own venv
(`--inside`) under config.settings.prod, with Redis for the channel layer,
djust's state, presence and the cache, and SQLite for the database (no event
here touches it). There, channels' WebsocketCommunicator drives the project's
real ASGI application (origin check, session and auth middleware,
StrictLiveViewConsumer) on uvloop, as bin/serve runs it: one session per
configuration mounts the demo's CounterView and sends `increment` events one
after another, each answered before the next is sent.

Each configuration removes (or restores) one part, by patching in this
benchmark process only; the generated project patches nothing. Each round
runs every configuration once, in a shuffled order, so that a busy machine
slows them alike; every figure is printed beside the unchanged baseline of the
same run, and the baseline runs twice per round to show the noise floor. djust's
per-connection rate limit (100 messages/s) is lifted for every configuration:
one session here sends far faster than a person clicks.

Reported per configuration: thread hops per event (calls into asgiref's
SyncToAsync, counted), the median and p10-p90 of the event round trip, and the
process CPU per event (median and range over rounds). Then the cost of a
connect with and without djust's `djust_hotreload` group join, and of one bare
sync_to_async hop.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()

# (name, what differs from the baseline)
CONFIGS = [
    ("baseline", "the template as generated: demo CounterView, async handler"),
    ("baseline_again", "the baseline in a second session of each round: the noise floor"),
    ("channels_cleanup", "+ channels' DB cleanup before every message (the template before this change)"),
    ("no_permission_hops", "- djust's check_handler_permission/check_object_permission hops (inline)"),
    ("no_render_hop", "- the render hop (render_with_diff, _sync_state_to_rust inline)"),
    ("no_tracking", "- PerformanceTracker and SQL capture scope per event"),
    ("no_djust_hops", "- permission and render hops together"),
    ("local_async", "handler without the shared total (no Redis INCR hop, no push), async def"),
    ("local_def", "handler without the shared total, plain def (djust's sync_to_async hop)"),
]


# ---------------------------------------------------------------- inside the project


def inside(args):
    """Runs in the project's venv with DJANGO_SETTINGS_MODULE set; prints JSON."""
    sys.path.insert(0, os.getcwd())
    import uvloop
    from config.asgi import application  # noqa: F401  (django.setup() happens here)

    bench = InsideBench(args)
    results = uvloop.run(bench.run())
    print(json.dumps(results))


class InsideBench:
    def __init__(self, args):
        from asgiref.sync import SyncToAsync

        self.args = args
        self.hops = 0
        original_call = SyncToAsync.__call__

        def counting_call(s2a, *a, **k):
            self.hops += 1
            return original_call(s2a, *a, **k)

        SyncToAsync.__call__ = counting_call
        self.lift_rate_limit()
        self.add_views()

    @staticmethod
    def lift_rate_limit():
        from djust.rate_limit import ConnectionRateLimiter

        ConnectionRateLimiter.check = lambda self, event_name: True

    @staticmethod
    def add_views():
        """Two counters whose handler only counts, async and def, mountable from core.views."""
        import core.views
        from djust.decorators import event_handler

        class LocalAsync(core.views.CounterView):
            @event_handler()
            async def increment(self, **kwargs):
                self.count += 1

        class LocalDef(core.views.CounterView):
            @event_handler()
            def increment(self, **kwargs):
                self.count += 1

        for cls in (LocalAsync, LocalDef):
            cls.__module__ = "core.views"
            cls.__qualname__ = cls.__name__ = f"Bench{cls.__name__}"
            setattr(core.views, cls.__name__, cls)

    @contextlib.contextmanager
    def configured(self, name):
        """Patch this process for one configuration; undo on exit."""
        undo = []

        def patch(obj, attr, value):
            undo.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)

        view = "core.views.CounterView"
        if name == "channels_cleanup":
            from channels.consumer import AsyncConsumer
            from core.consumers import StrictLiveViewConsumer

            patch(StrictLiveViewConsumer, "dispatch", AsyncConsumer.dispatch)
        if name in ("no_permission_hops", "no_djust_hops"):
            import djust.websocket_utils

            inline = {"check_handler_permission", "check_object_permission"}
            patch(
                djust.websocket_utils, "sync_to_async", selective(djust.websocket_utils.sync_to_async, inline)
            )
        if name in ("no_render_hop", "no_djust_hops"):
            import djust.runtime
            import djust.websocket

            inline = {"render_with_diff", "_sync_state_to_rust"}
            for module in (djust.runtime, djust.websocket):
                patch(module, "sync_to_async", selective(module.sync_to_async, inline))
        if name == "no_tracking":
            import djust.observability.sql
            import djust.performance

            patch(djust.performance, "PerformanceTracker", NullTracker)
            patch(djust.observability.sql, "capture_for_event", lambda **kwargs: contextlib.nullcontext())
        if name == "local_async":
            view = "core.views.BenchLocalAsync"
        if name == "local_def":
            view = "core.views.BenchLocalDef"
        try:
            yield view
        finally:
            for obj, attr, value in reversed(undo):
                setattr(obj, attr, value)

    async def open(self, view):
        from channels.testing import WebsocketCommunicator
        from config.asgi import application

        communicator = WebsocketCommunicator(
            application, "/ws/live/", headers=[(b"origin", b"http://localhost")]
        )
        connected, _ = await communicator.connect(timeout=10)
        assert connected, "the WebSocket was refused"
        assert (await communicator.receive_json_from(timeout=10))["type"] == "connect"
        # A URL no route matches: the consumer then mounts the view asked for.
        await communicator.send_json_to({"type": "mount", "view": view, "params": {}, "url": "/bench/"})
        mounted = await communicator.receive_json_from(timeout=10)
        assert mounted["type"] == "mount", mounted
        return communicator

    @staticmethod
    async def event(communicator, ref):
        await communicator.send_json_to({"type": "event", "event": "increment", "params": {}, "ref": ref})
        for _ in range(50):
            reply = await communicator.receive_json_from(timeout=10)
            if reply.get("ref") == ref:
                if reply["type"] not in ("patch", "noop"):
                    raise RuntimeError(f"event {ref} answered with {reply}")
                return
        raise RuntimeError(f"no answer to event {ref}")

    async def one_session(self, name):
        with self.configured(name) as view:
            communicator = await self.open(view)
            try:
                for ref in range(1, self.args.warmup + 1):
                    await self.event(communicator, ref)
                times = []
                hops = self.hops
                cpu = time.process_time()
                for ref in range(1000, 1000 + self.args.events):
                    started = time.perf_counter()
                    await self.event(communicator, ref)
                    times.append(time.perf_counter() - started)
                cpu = time.process_time() - cpu
                hops = self.hops - hops
            finally:
                await communicator.disconnect()
        return times, cpu / self.args.events, hops / self.args.events

    async def connects(self, skip_hotreload):
        """Seconds per connect-and-close, with or without djust's hot-reload group."""
        from channels.testing import WebsocketCommunicator
        from channels_redis.core import RedisChannelLayer
        from config.asgi import application

        original_add, original_discard = RedisChannelLayer.group_add, RedisChannelLayer.group_discard

        async def group_add(layer, group, channel):
            if group != "djust_hotreload":
                await original_add(layer, group, channel)

        async def group_discard(layer, group, channel):
            if group != "djust_hotreload":
                await original_discard(layer, group, channel)

        if skip_hotreload:
            RedisChannelLayer.group_add, RedisChannelLayer.group_discard = group_add, group_discard
        try:
            times = []
            for _ in range(self.args.connects):
                started = time.perf_counter()
                communicator = WebsocketCommunicator(
                    application, "/ws/live/", headers=[(b"origin", b"http://localhost")]
                )
                await communicator.connect(timeout=10)
                await communicator.receive_json_from(timeout=10)
                await communicator.disconnect()
                times.append(time.perf_counter() - started)
            return times
        finally:
            RedisChannelLayer.group_add, RedisChannelLayer.group_discard = original_add, original_discard

    async def bare_hop(self):
        from asgiref.sync import sync_to_async

        def nothing():
            return None

        times = []
        for _ in range(2000):
            started = time.perf_counter()
            await sync_to_async(nothing)()
            times.append(time.perf_counter() - started)
        return times

    async def run(self):
        names = [name for name, _ in CONFIGS]
        events = {name: {"times": [], "cpu": [], "hops": []} for name in names}
        connects = {"as_generated": [], "without_hotreload_group": []}
        shuffle = random.Random(14)  # the same orders in every run
        for _ in range(self.args.rounds):
            order = names[:]
            shuffle.shuffle(order)
            for name in order:
                # Let what the previous session left running finish (its
                # disconnect's Redis calls, a trailing push) before timing.
                await asyncio.sleep(self.args.settle)
                times, cpu, hops = await self.one_session(name)
                events[name]["times"] += times
                events[name]["cpu"].append(cpu)
                events[name]["hops"].append(hops)
            connects["as_generated"] += await self.connects(False)
            connects["without_hotreload_group"] += await self.connects(True)
            await asyncio.sleep(self.args.settle)
        return {"events": events, "connects": connects, "bare_hop": await self.bare_hop()}


class NullTracker:
    """Stands in for djust.performance.PerformanceTracker: tracks nothing."""

    @staticmethod
    def set_current(tracker):
        return None

    @staticmethod
    def get_current():
        return None


def selective(sync_to_async, names):
    """sync_to_async, except that functions called `names` run inline on the event loop."""

    def wrapper(function, *args, **kwargs):
        if getattr(function, "__name__", None) in names:

            async def inline(*a, **k):
                return function(*a, **k)

            return inline
        return sync_to_async(function, *args, **kwargs)

    return wrapper


# ---------------------------------------------------------------- the driver


def ms(seconds):
    return round(seconds * 1000, 3)


def summary(values):
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p10": ordered[len(ordered) // 10],
        "p90": ordered[len(ordered) * 9 // 10],
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


def span(figures):
    """'median (p10-p90)' in milliseconds."""
    return f"{ms(figures['median']):.3f} ({ms(figures['p10']):.3f}-{ms(figures['p90']):.3f})"


def report(raw):
    """Summaries of the raw figures, and the tables as Markdown."""
    described = dict(CONFIGS)
    base = summary(raw["events"]["baseline"]["times"])["median"]
    base_cpu = raw["events"]["baseline"]["cpu"]
    rows = {}
    table = [
        "| configuration | hops/event | round trip ms, median (p10-p90) | vs baseline"
        " | CPU ms/event, median (range over rounds) | vs baseline, paired by round: median (range) |",
        "|---|---|---|---|---|---|",
    ]
    for name, figures in raw["events"].items():
        wall, cpu = summary(figures["times"]), summary(figures["cpu"])
        hops = statistics.median(figures["hops"])
        rows[name] = {
            "description": described[name],
            "hops_per_event": hops,
            "round_trip_s": wall,
            "cpu_s": cpu,
        }
        # The same round's baseline ran seconds apart: the pairs
        # cancel most of what a busy machine adds over the run.
        paired = summary([mine - theirs for mine, theirs in zip(figures["cpu"], base_cpu, strict=True)])
        rows[name]["cpu_vs_baseline_s"] = paired
        table.append(
            f"| {name}: {described[name]} | {hops:g} | {span(wall)} | {ms(wall['median'] - base):+.3f}"
            f" | {ms(cpu['median']):.3f} ({ms(cpu['min']):.3f}-{ms(cpu['max']):.3f})"
            f" | {ms(paired['median']):+.3f} ({ms(paired['min']):+.3f} to {ms(paired['max']):+.3f}) |"
        )
    connects = {name: summary(times) for name, times in raw["connects"].items()}
    table += ["", "| connect + close | ms, median (p10-p90) |", "|---|---|"]
    table += [f"| {name} | {span(figures)} |" for name, figures in connects.items()]
    hop = summary(raw["bare_hop"])
    table += [
        "",
        f"One bare sync_to_async hop of a no-op function: median {hop['median'] * 1e6:.0f} us"
        f" (p10-p90 {hop['p10'] * 1e6:.0f}-{hop['p90'] * 1e6:.0f} us).",
    ]
    return {"events": rows, "connects": connects, "bare_hop_s": hop}, "\n".join(table)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", help="a generated default project with its .venv (else one is baked)")
    parser.add_argument("--events", type=int, default=300, help="timed events per session (default 300)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed events first (default 30)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all configurations (default 5)")
    parser.add_argument("--connects", type=int, default=50, help="connects per round and kind (default 50)")
    parser.add_argument("--settle", type=float, default=0.3, help="seconds of quiet before each session")
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        inside(args)
        return
    sys.path.insert(0, str(HERE.parent.parent))
    from bench.machine import machine, versions
    from tests import stack
    from tests.conftest import Project, bake_variant
    from tests.variants import answers

    with tempfile.TemporaryDirectory(prefix="bench-hops-") as workdir:
        workdir = Path(workdir)
        if args.project:
            path = Path(args.project).resolve()
            project = Project(variant="default", path=path, answers=answers("default"))
        else:
            print("generating the default project", file=sys.stderr)
            project = bake_variant("default", workdir / "generated")
        project.sync()
        (workdir / "redis").mkdir()
        redis = stack.RedisServer(workdir / "redis").start()
        try:
            env = {
                **project.dotenv(),
                "DJANGO_SETTINGS_MODULE": "config.settings.prod",
                "REDIS_URL": redis.url,
                "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
                "DJANGO_ALLOWED_HOSTS": "localhost",
                "SENTRY_DSN": "",
            }
            python = str(project.path / ".venv" / "bin" / "python")
            command = [python, str(HERE), "--inside", *forwarded(args)]
            print(f"measuring in {project.path} (a few minutes)", file=sys.stderr)
            result = subprocess.run(
                command, cwd=project.path, env=project.env(**env),
                capture_output=True, text=True, timeout=3600,
            )  # fmt: skip
            if result.returncode != 0:
                sys.exit(f"the measurement failed:\n{result.stderr[-4000:]}")
            raw = json.loads(result.stdout.strip().splitlines()[-1])
        finally:
            redis.stop()
    figures, table = report(raw)
    print(table)
    if args.output:
        meta = {
            "settings": "config.settings.prod, real Redis (tests/stack.py), SQLite database, uvloop",
            "events_per_session": args.events,
            "rounds": args.rounds,
            "machine": machine(),
            "versions": versions(str(project.path / ".venv" / "bin" / "python")),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        Path(args.output).write_text(json.dumps({"meta": meta, **figures, "raw": raw}, indent=1))


def forwarded(args):
    return [
        f"--events={args.events}", f"--warmup={args.warmup}",
        f"--rounds={args.rounds}", f"--connects={args.connects}", f"--settle={args.settle}",
    ]  # fmt: skip


if __name__ == "__main__":
    main()
