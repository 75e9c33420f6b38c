"""Benchmark the generated service against baselines on this machine, in one go.

    uv run --group test python -m bench.run                  # the full run (~30 minutes on 2 cores)
    uv run --group test python -m bench.run --sizes 10 --events 3 --memory-sessions 20   # a quick look

What runs, all on 127.0.0.1 (see BENCHMARKS.md for the numbers):
1. Generates the default project (cookiecutter), syncs its venv, starts Postgres and
   Redis. Two passes follow, pinned then unpinned (--no-pin: unpinned only). Pinned
   (taskset, util-linux): k6, wrk and every Nginx on CPU 0; the server under test,
   Redis and Postgres on CPU 1; what /proc says each process may use is recorded.
2. In each pass, one target at a time behind its Nginx: this template (bin/serve),
   the same project with its demo handler as a plain `def`, the project `djust new`
   generates (bench/baselines/djust_new) and a bare uvicorn WebSocket echo. k6 runs
   LiveView sessions at each size, 1 event/s on a fixed schedule (open loop), then a
   closed-loop run (capacity); wrk loads `/` and /health/live/ of this template and
   a bare Django view. Every point runs --repeats times (--unpinned-repeats in the
   second pass): median and min-max are reported, server CPU per event and per page
   first, each beside the baselines of the same pass.
3. Once, pinned: memory per idle WebSocket (with and without permessage-deflate) and
   start-up to the first 200 of bin/serve (1 and 2 workers) and of a bare Django app
   on uvicorn (bench/baselines/bare_django.py, one worker).
4. Writes the JSON (--output) and renders BENCHMARKS.md and the PNG plot.

Every load loop is bounded in count and time.
"""

import argparse
import contextlib
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import project as bench_project  # noqa: E402
from bench import render  # noqa: E402
from bench.compare import LIVE_TARGETS, fold, judge, primary  # noqa: E402
from bench.fronts import Target  # noqa: E402
from bench.load import run_k6, run_wrk  # noqa: E402
from bench.machine import machine, versions  # noqa: E402
from bench.measure import measure_frames, measure_memory, profile_worker  # noqa: E402
from bench.procs import LOAD_CPU, NO_PINNING, SERVER_CPU, Pinning, affinity_of, cpu_seconds, first_200, log  # noqa: E402
from bench.targets import Targets, baseline_env  # noqa: E402
from tests import stack  # noqa: E402


def parse_env_overrides(pairs):
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {pair!r}")
        overrides[key] = value
    return overrides


def estimate_s(args, passes):
    """A rough duration of the run, from its sizes and repeats (printed at the start)."""
    targets = [t for t in args.only if t in LIVE_TARGETS]
    total = 120  # generate, uv sync, migrate, Postgres, Redis
    for _, repeats in passes:
        per_target = 8  # start the server and its Nginx
        for size in args.sizes:
            per_target += repeats * (max(1, size * 0.005) + 2 + args.events + 6 + args.pause + 1)
        if args.capacity_seconds:
            per_target += repeats * (0.5 + 2 + args.capacity_seconds + 4 + args.pause + 1)
        total += per_target * len(targets)
        if args.wrk_seconds and "ours" in targets:
            total += 3 * repeats * (args.wrk_seconds + 1 + args.pause) + 8
    if args.memory_sessions:
        # Each mount tells every open page of this template who is online, so opening N
        # sessions costs about N squared (measured: 700 took 176 s on the pinned core).
        opened = args.memory_sessions + 200
        total += 2 * (10 + opened**2 / 2800) + 2 * (10 + 0.05 * opened)
    total += args.startup_repeats * 3 * 7
    total += args.profile_seconds + 10 if args.profile_seconds else 0
    return total


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="djust-bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cleanup = []
        self.pin = Pinning(args.pin)
        self.workers = args.workers or (1 if args.pin else 2)
        self.passes = (
            [("pinned", args.repeats), ("unpinned", args.unpinned_repeats)]
            if args.pin
            else [("unpinned", args.repeats)]
        )
        self.passes = [(name, repeats) for name, repeats in self.passes if repeats > 0]
        self.mount_html_bytes = 0
        self.results = {
            "meta": {
                "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
                "machine": machine(),
                "loadavg_at_start": os.getloadavg(),
                "sizes": args.sizes,
                "events_per_session": args.events,
                "workers": self.workers,
                "passes": {name: {"repeats": repeats} for name, repeats in self.passes},
                "primary_pass": self.passes[0][0],
                "estimate_s": round(estimate_s(args, self.passes)),
                "pinning": {"load_cpu": LOAD_CPU, "server_cpu": SERVER_CPU, "seen": {}} if args.pin else None,
                "notes": [],
            },
            "passes": {},
            "memory": [],
            "startup": [],
        }

    # Everything we start is stopped in reverse order, whatever happens.
    def started(self, thing):
        self.cleanup.append(thing)
        return thing

    def close(self):
        for thing in reversed(self.cleanup):
            with contextlib.suppress(Exception):
                thing.stop()
        self.cleanup.clear()

    def stop(self, *things):
        for thing in things:
            with contextlib.suppress(Exception):
                thing.stop()
            if thing in self.cleanup:
                self.cleanup.remove(thing)

    def note(self, text):
        log(text)
        self.results["meta"]["notes"].append(text)

    # --- the generated project, Redis, Postgres ---
    def prepare_project(self):
        project = bench_project.generated(self.args.project, self.workdir)
        bench_project.compile_bytecode(project)
        self.project = project
        self.python = str(project.path / ".venv" / "bin" / "python")
        self.results["meta"]["versions"] = versions(self.python)
        env, self.domain, self.redis, self.pg = bench_project.dependencies(
            project, self.workdir, self.started, pin=lambda pid: self.pin.pin_running(pid, SERVER_CPU)
        )
        self.note(
            "Every load session comes from 127.0.0.1, so bench lifts the per-address WebSocket limits "
            "(the generated Nginx site's limit_req/limit_conn, djust's max_connections_per_ip) in the "
            "copies it runs; nothing else of the generated site or settings changes"
        )
        env.update(parse_env_overrides(self.args.server_env))
        self.app_env = env
        bench_project.migrated(project, env)

    def postgres_pid(self):
        return bench_project.postgres_pid(self.pg)

    def record_affinity(self, target):
        """What /proc says the server's processes (workers included) and its Nginx may run on."""
        pinning = self.results["meta"]["pinning"]
        if not self.pin.on or target.name in pinning["seen"]:
            return
        seen = {
            "server": affinity_of([target.server.process.pid]),
            "nginx": affinity_of(target.nginx.pids()[:1]),
        }
        if target.name == "ours":
            seen["redis"] = affinity_of([self.redis.pid])
            if self.pg:
                seen["postgres"] = affinity_of([self.postgres_pid()])
        pinning["seen"][target.name] = seen
        wrong = [
            f"{group} {proc}: {cpus}"
            for group, procs in seen.items()
            for proc, cpus in procs.items()
            if cpus != str(LOAD_CPU if group == "nginx" else SERVER_CPU)
        ]
        if wrong:
            self.note(f"{target.name}: not pinned as asked: {'; '.join(wrong)}")

    # --- measurements ---
    def settle(self, target, idle_share=0.05, bound_s=90):
        """Pause, then wait until the server is idle: an overloaded run must not spill into the next."""
        time.sleep(self.args.pause)
        pids = target.server_pids()
        started = time.monotonic()
        while time.monotonic() - started < bound_s:
            before = cpu_seconds(pids)
            time.sleep(1)
            if cpu_seconds(pids) - before <= idle_share:
                return round(time.monotonic() - started, 1)
        self.note(f"{target.name}: server still busy {bound_s} s after a run; went on anyway")
        return None

    def k6(self, target, sessions, events, **kwargs):
        result = run_k6(target, sessions, events, self.workdir, prefix=self.pin.load(), **kwargs)
        result["settle_s"] = self.settle(target)
        return result

    def liveview(self, target, section, repeats):
        runs = []
        for sessions in self.args.sizes:
            repeat = []
            for number in range(repeats):
                log(
                    f"{target.name}: {sessions} sessions x 1 event/s for {self.args.events} s "
                    f"({number + 1}/{repeats})"
                )
                result = self.k6(target, sessions, self.args.events)
                rtt = result["rtt_ms"]
                log(
                    f"  p50 {rtt['p50']} p99 {rtt['p99']} max {rtt['max']} ms; "
                    f"{result['events_answered']}/{result['events_sent']} answered, "
                    f"{result['errors']} errors; "
                    f"server {result['server_cpu_ms_per_event']} ms CPU/event"
                )
                repeat.append(result)
            runs.append(fold(repeat))
        section["liveview"][target.name] = {"label": target.label, "runs": runs}
        if self.args.capacity_seconds:
            repeat = []
            for number in range(repeats):
                log(
                    f"{target.name}: capacity, {self.args.capacity_sessions} sessions closed loop "
                    f"({number + 1}/{repeats})"
                )
                cap = self.k6(
                    target,
                    self.args.capacity_sessions,
                    0,
                    mode="closed",
                    duration_s=self.args.capacity_seconds,
                    ramp_ms=500,
                )
                log(f"  {cap['events_per_s']} events/s, server {cap['server_cpu_ms_per_event']} ms CPU/event")
                repeat.append(cap)
            section["capacity"][target.name] = fold(repeat)

    def http(self, target, paths, section, repeats):
        seconds, conns = self.args.wrk_seconds, self.args.wrk_connections
        for path in paths:
            repeat = []
            for number in range(repeats):
                log(
                    f"wrk {target.name} {path} through Nginx ({conns} connections, {seconds} s) "
                    f"({number + 1}/{repeats})"
                )
                result = run_wrk(
                    f"{target.nginx.base}{path}",
                    self.domain,
                    seconds,
                    conns,
                    server_pids=target.server_pids(),
                    prefix=self.pin.load(),
                )
                result["target"] = target.name
                log(
                    f"  {result['requests_per_s']} req/s, p99 {result.get('p99_ms')} ms, "
                    f"server {result['server_cpu_ms_per_request']} ms CPU/request, "
                    f"non-2xx {result['non_2xx_3xx']}"
                )
                repeat.append(result)
                time.sleep(self.args.pause)
            section["http"].append(fold(repeat))

    def memory(self, targets):
        """Per-session RSS on a freshly started server for each mode, so freed memory is not reused."""
        for name in [name for name in ("ours", "djust_new") if name in self.args.only]:
            for compression in ("deflate", None):
                if name == "ours":
                    server = targets.app_server(self.project, self.workers, "serve-memory.log")
                    view = "core.views.CounterView"
                else:
                    server, view = targets.baseline_server(name)
                self.started(server.start())
                target = Target(
                    name, name, server, None, view, origin=f"https://{self.domain}", host=self.domain
                )
                log(
                    f"{name}: memory over {self.args.memory_sessions} idle sessions on a fresh server, "
                    f"client offers deflate: {compression is not None}"
                )
                try:
                    result = measure_memory(
                        target,
                        server.port,
                        self.args.memory_sessions,
                        compression,
                        self.redis if name == "ours" else None,
                    )
                finally:
                    self.stop(server)
                log(
                    f"  {result['kb_per_session']} KB per session ({result['negotiated']}), "
                    f"{result['failures']} failures"
                )
                self.results["memory"].append(result)

    def startup(self, targets):
        """Exec to first 200: bin/serve with 1 and 2 workers, and a bare Django app on uvicorn (1 worker)."""
        repeats = self.args.startup_repeats
        runs = [("ours", 1), ("ours", 2), ("bare_django", 1)]
        for name, workers in runs:
            times = []
            for _ in range(repeats):
                port = stack.free_port()
                if name == "ours":
                    env = self.project.env(
                        **{
                            **self.app_env,
                            "DJANGO_SETTINGS_MODULE": "config.settings.prod",
                            "HOST": "127.0.0.1",
                            "PORT": str(port),
                            "WEB_CONCURRENCY": str(workers),
                        }
                    )
                    argv, cwd, path = [self.python, "bin/serve"], self.project.path, "/health/live/"
                else:
                    env, cwd, path = baseline_env(), REPO, "/health/live/"
                    argv = [self.python, "-m", "uvicorn", "bench.baselines.bare_django:application"]
                    argv += ["--port", str(port), "--log-level", "warning"]
                seconds = first_200(
                    [*self.pin.server(), *argv], cwd, env, port, path, self.workdir / f"startup-{name}.log"
                )
                times.append(seconds)
                time.sleep(0.5)
            measured = sorted(t for t in times if t is not None)
            result = {
                "target": name,
                "workers": workers,
                "seconds": times,
                "median_s": measured[len(measured) // 2] if measured else None,
                "min_s": measured[0] if measured else None,
                "max_s": measured[-1] if measured else None,
            }
            log(f"start-up {name}, {workers} worker(s): {times}")
            self.results["startup"].append(result)

    def one_pass(self, name, repeats):
        args = self.args
        pin = self.pin if name == "pinned" else NO_PINNING
        # The bench's own process (polling /proc, the memory clients) stays off the server's core.
        os.sched_setaffinity(0, {LOAD_CPU} if pin.on else set(range(os.cpu_count())))
        targets = Targets(self, pin)
        section = {"liveview": {}, "capacity": {}, "http": [], "repeats": repeats}
        self.results["passes"][name] = section
        log(f"=== {name} pass, {repeats} run(s) of each point")
        for target_name in [t for t in LIVE_TARGETS if t in args.only]:
            target = targets.start(target_name)
            self.record_affinity(target) if pin.on else None
            if target_name == "ours" and not self.mount_html_bytes:
                frames = measure_frames(target)
                self.mount_html_bytes = frames["mount_html_chars"]
                self.results["meta"]["frames"] = frames
            self.liveview(target, section, repeats)
            if target_name == "ours" and args.wrk_seconds:
                self.http(target, ("/health/live/", "/"), section, repeats)
            if target_name == "ours" and args.profile_seconds and name == self.passes[0][0]:
                self.profile(target)
            self.stop(target.nginx, target.server)
        if args.wrk_seconds and "ours" in args.only:
            bare = targets.start("bare_django")
            self.record_affinity(bare) if pin.on else None
            self.http(bare, ("/",), section, repeats)
            self.stop(bare.nginx, bare.server)
        if name == self.passes[0][0]:
            if args.memory_sessions and {"ours", "djust_new"} & set(args.only):
                self.memory(targets)
            if args.startup_repeats:
                self.startup(targets)
        section["primary"] = primary(section, args.sizes)

    def profile(self, target):
        if not (shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))):
            self.note("py-spy is not installed (pip install py-spy): no profile")
            return
        log(f"py-spy on one worker for {self.args.profile_seconds} s under closed-loop load")
        self.results["profile"] = profile_worker(
            target, self.workdir, self.args.profile_seconds, self.args.capacity_sessions
        )

    def run(self):
        self.prepare_project()
        for name, repeats in self.passes:
            self.one_pass(name, repeats)
        os.sched_setaffinity(0, set(range(os.cpu_count())))
        self.results["targets"] = judge(self.results)
        self.results["meta"]["loadavg_at_end"] = os.getloadavg()
        self.results["meta"]["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500", help="concurrent sessions per run, comma list")
    parser.add_argument("--events", type=int, default=15, help="events per session (1/s) in each run")
    parser.add_argument("--only", default="ours,ours_def,djust_new,echo", help="targets to run, comma list")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each point (median, min-max)")
    parser.add_argument(
        "--unpinned-repeats", type=int, default=1, help="runs of each point unpinned (0: no pass)"
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset: one unpinned pass")
    parser.add_argument("--workers", type=int, help="bin/serve's workers (default: 1 pinned, 2 not)")
    parser.add_argument("--capacity-sessions", type=int, default=50)
    parser.add_argument("--capacity-seconds", type=float, default=10, help="0 skips the closed-loop run")
    parser.add_argument(
        "--memory-sessions",
        type=int,
        default=1000,
        help="0 skips the memory runs (at 300 the workers' one-time heap growth still showed: 90.6 KB "
        "against 61-63 KB at 1,000)",
    )
    parser.add_argument("--wrk-seconds", type=int, default=8, help="0 skips HTTP")
    parser.add_argument("--wrk-connections", type=int, default=50)
    parser.add_argument("--startup-repeats", type=int, default=3, help="0 skips start-up timing")
    parser.add_argument("--profile-seconds", type=int, default=0, help="py-spy a worker this long (0: off)")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds of quiet between runs")
    parser.add_argument(
        "--server-env",
        action="append",
        metavar="KEY=VALUE",
        help="extra environment for bin/serve (try a setting)",
    )
    parser.add_argument("--project", help="use this generated project instead of generating one")
    parser.add_argument("--workdir", help="where servers keep their files (default: a new temp dir)")
    parser.add_argument("--output", default=str(REPO / "bench" / "results.json"))
    parser.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--plot", default=str(REPO / "bench" / "latency.png"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.pin and (os.cpu_count() or 1) < 2:
        args.pin = False
    bench = Bench(args)
    log(f"work directory {bench.workdir}")
    log(
        f"passes {bench.passes}, {bench.workers} worker(s); estimated duration "
        f"{bench.results['meta']['estimate_s'] / 60:.0f} min"
    )
    started = time.monotonic()
    try:
        bench.run()
    finally:
        bench.close()
        os.sched_setaffinity(0, set(range(os.cpu_count())))
    bench.results["meta"]["duration_s"] = round(time.monotonic() - started)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(bench.results, indent=1) + "\n")
    log(f"wrote {output}")
    render.write(bench.results, Path(args.markdown), Path(args.plot))
    log(f"wrote {args.markdown} and {args.plot}; took {bench.results['meta']['duration_s'] / 60:.1f} min")
    print(render.summary(bench.results), flush=True)
    if not args.keep and not args.workdir:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
