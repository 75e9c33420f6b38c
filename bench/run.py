"""Benchmark the generated service against two baselines on this machine, in one go.

    uv run --group test python -m bench.run                  # full size: 100, 500, 1000 sessions
    uv run --group test python -m bench.run --sizes 10 --events 3 --quick   # smoke size

What runs, all on 127.0.0.1 (see BENCHMARKS.md for the numbers):
1. Generates the default project (cookiecutter), syncs its venv, starts Postgres,
   Redis, `bin/serve` with 2 workers under config.settings.prod, and Nginx in
   front (the generated site when tests/stack.py can render it, else
   bench's own TLS site of the same shape).
2. LiveView sessions through Nginx with k6 (bench/k6/liveview.js): each session
   connects, mounts the counter, then sends 1 event/s on a fixed schedule
   (open loop) for --events seconds; round trip p50/p95/p99, events/s, errors,
   whether every event got its patch. Then a short closed-loop run (capacity).
3. The same for two baselines behind the same kind of Nginx: a bare uvicorn
   WebSocket echo (bench/baselines/echo_app.py, the ceiling) and the project
   `djust new` would give (bench/baselines/djust_new: one process, memory state,
   in-memory channel layer); ratios to both.
4. HTTP through Nginx with wrk: /health/live/ and / against a bare Django view
   (bench/baselines/bare_django.py) served the same way.
5. Resident memory per idle mounted WebSocket (sum of the workers' RSS from
   /proc, with and without permessage-deflate) and bin/serve's start-to-first-200.
6. Writes the JSON (--output) and renders BENCHMARKS.md and the PNG plot.

k6, wrk, Nginx and the servers share this machine's cores; the CPU each used is
recorded next to the numbers. Every load loop is bounded in count and time.
"""

import argparse
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import render  # noqa: E402
from bench.compare import judge, ratios  # noqa: E402
from bench.fronts import BenchNginx, GeneratedSite, Target  # noqa: E402
from bench.load import run_k6, run_wrk  # noqa: E402
from bench.machine import machine, versions  # noqa: E402
from bench.measure import measure_frames, measure_memory, measure_startup, profile_worker  # noqa: E402
from bench.procs import Server, cpu_seconds, log  # noqa: E402
from tests import stack  # noqa: E402

BASELINES = REPO / "bench" / "baselines"


def parse_env_overrides(pairs):
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {pair!r}")
        overrides[key] = value
    return overrides


class Bench:
    def __init__(self, args):
        self.args = args
        self.workdir = Path(args.workdir or tempfile.mkdtemp(prefix="djust-bench-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cleanup = []
        self.results = {
            "meta": {
                "started_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
                "machine": machine(),
                "loadavg_at_start": os.getloadavg(),
                "sizes": args.sizes,
                "events_per_session": args.events,
                "notes": [],
            },
            "liveview": {},
            "capacity": {},
            "http": [],
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

    def note(self, text):
        log(text)
        self.results["meta"]["notes"].append(text)

    # --- the generated project ---
    def prepare_project(self):
        from tests.conftest import Project, bake_variant
        from tests.variants import answers

        if self.args.project:
            path = Path(self.args.project).resolve()
            project = Project(variant="default", path=path, answers=answers("default"))
            log(f"using the generated project at {path}")
        else:
            log("generating the default project")
            project = bake_variant("default", self.workdir / "generated")
        log("uv sync (the project's own lock and venv)")
        project.sync()
        self.project = project
        self.python = str(project.path / ".venv" / "bin" / "python")
        self.results["meta"]["versions"] = versions(self.python)
        dotenv = project.dotenv()
        self.domain = dotenv.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")[0].strip()

        (self.workdir / "redis").mkdir(exist_ok=True)
        redis = self.started(stack.RedisServer(self.workdir / "redis").start())
        self.redis = redis
        env = {**dotenv, "REDIS_URL": redis.url, "DJANGO_ALLOWED_HOSTS": f"{self.domain},localhost,127.0.0.1"}
        if project.answers.get("database") == "postgresql":
            pg = self.started(stack.Postgres(self.workdir / "pg").start())
            env["DATABASE_URL"] = pg.url
        env.update(parse_env_overrides(self.args.server_env))
        self.app_env = env
        return project

    def start_ours(self):
        app = stack.AppServer(self.project, self.app_env, workers=2, log_path=self.workdir / "serve.log")
        log("migrate + collectstatic, then bin/serve with 2 workers")
        app.prepare()
        self.started(app.start())
        nginx = GeneratedSite(self.workdir / "nginx-ours", app.port, self.project)
        if nginx.exists():
            note = (
                "Nginx in front of this template: the generated deploy/nginx site (ports, certificate moved)"
            )
        else:
            nginx = BenchNginx(self.workdir / "nginx-ours", app.port)
            note = "Nginx in front of this template: bench's site (the project has no deploy/nginx site)"
        self.started(nginx.start())
        target = Target(
            "ours",
            "this template (bin/serve, 2 workers, Redis)",
            app,
            nginx,
            "core.views.CounterView",
            origin=f"https://{self.domain}",
            host=self.domain,
            notes=[note],
        )
        self.note(note)
        return target

    def baseline_server(self, name):
        """A baseline's server (not started), its label and the view its sessions mount."""
        port = stack.free_port()
        if name == "echo":
            server = Server(
                "echo",
                [
                    self.python,
                    "-m",
                    "uvicorn",
                    "bench.baselines.echo_app:app",
                    "--port",
                    str(port),
                    "--workers",
                    "2",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=REPO,
                env=self.baseline_env(ECHO_MOUNT_HTML_BYTES=str(self.mount_html_bytes)),
                port=port,
                log_path=self.workdir / "echo.log",
            )
            return server, "bare uvicorn WebSocket echo (2 workers)", "echo"
        directory = self.workdir / "djust_new"
        env = self.baseline_env(ALLOWED_HOSTS=f"{self.domain},localhost,127.0.0.1")
        if not directory.exists():
            shutil.copytree(BASELINES / "djust_new", directory)
            subprocess.run(
                [self.python, "manage.py", "migrate", "--noinput", "-v0"],
                cwd=directory,
                env=env,
                check=True,
                timeout=300,
                capture_output=True,
            )
        # `make dev` minus --reload: uvicorn, one process.
        server = Server(
            "djust_new",
            [
                self.python,
                "-m",
                "uvicorn",
                "demo.asgi:application",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=directory,
            env=env,
            port=port,
            log_path=self.workdir / "djust_new.log",
        )
        return (
            server,
            "`djust new` shape (1 process, memory state, in-memory layer)",
            "demo.views.CounterView",
        )

    def start_baseline(self, name):
        server, label, view = self.baseline_server(name)
        log(f"starting baseline {name}")
        self.started(server.start())
        nginx = self.started(BenchNginx(self.workdir / f"nginx-{name}", server.port).start())
        return Target(name, label, server, nginx, view, origin=f"https://{self.domain}", host=self.domain)

    def baseline_env(self, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VIRTUAL_ENV"))}
        env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
        return env

    def stop(self, target):
        for thing in (target.nginx, target.server):
            with contextlib.suppress(Exception):
                thing.stop()
            if thing in self.cleanup:
                self.cleanup.remove(thing)

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

    def liveview(self, target):
        runs = []
        for sessions in self.args.sizes:
            log(f"{target.name}: {sessions} sessions x 1 event/s for {self.args.events} s")
            result = run_k6(target, sessions, self.args.events, self.workdir)
            rtt = result["rtt_ms"]
            log(
                f"  p50 {rtt['p50']} p95 {rtt['p95']} p99 {rtt['p99']} max {rtt['max']} ms; "
                f"{result['events_answered']}/{result['events_sent']} answered, {result['errors']} errors, "
                f"{result['events_late_over_100ms']} over 100 ms; server CPU {result['cpu_s']['server']} s"
            )
            runs.append(result)
            result["settle_s"] = self.settle(target)
        self.results["liveview"][target.name] = {"label": target.label, "notes": target.notes, "runs": runs}
        if self.args.capacity_seconds:
            log(f"{target.name}: capacity, {self.args.capacity_sessions} sessions closed loop")
            cap = run_k6(
                target,
                self.args.capacity_sessions,
                0,
                self.workdir,
                mode="closed",
                duration_s=self.args.capacity_seconds,
                ramp_ms=500,
            )
            log(
                f"  {cap['events_per_s']} events/s, p50 {cap['rtt_ms']['p50']} ms, "
                f"server CPU {cap['server_cpu_ms_per_event']} ms/event"
            )
            self.results["capacity"][target.name] = cap
            cap["settle_s"] = self.settle(target)

    def measure_frames(self, target):
        """Length of the mount HTML and patch frames the real service sends (for the echo baseline)."""
        frames = measure_frames(target)
        self.mount_html_bytes = frames["mount_html_chars"]
        self.results["meta"]["frames"] = frames
        log(f"mount html {frames['mount_html_chars']} chars, patch frame {frames['patch_frame_chars']} chars")

    def http(self, ours):
        seconds, conns = self.args.wrk_seconds, self.args.wrk_connections
        for path in ("/health/live/", "/"):
            log(f"wrk {path} through Nginx ({conns} connections, {seconds} s)")
            cpu0 = cpu_seconds(ours.server_pids())
            result = run_wrk(f"{ours.nginx.base}{path}", self.domain, seconds, conns)
            result["server_cpu_s"] = round(cpu_seconds(ours.server_pids()) - cpu0, 2)
            result["target"] = "ours"
            log(
                f"  {result['requests_per_s']} req/s, p50 {result.get('p50_ms')} ms, "
                f"p99 {result.get('p99_ms')} ms, "
                f"non-2xx {result['non_2xx_3xx']}"
            )
            self.results["http"].append(result)
            time.sleep(self.args.pause)

    def http_bare(self):
        port = stack.free_port()
        server = self.started(
            Server(
                "bare_django",
                [
                    self.python,
                    "-m",
                    "uvicorn",
                    "bench.baselines.bare_django:application",
                    "--port",
                    str(port),
                    "--workers",
                    "2",
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=REPO,
                env=self.baseline_env(),
                port=port,
                log_path=self.workdir / "bare_django.log",
            ).start()
        )
        nginx = self.started(BenchNginx(self.workdir / "nginx-bare", port).start())
        seconds, conns = self.args.wrk_seconds, self.args.wrk_connections
        log(f"wrk bare Django view through Nginx ({conns} connections, {seconds} s)")
        result = run_wrk(f"{nginx.base}/", self.domain, seconds, conns)
        result["target"] = "bare_django"
        log(
            f"  {result['requests_per_s']} req/s, p50 {result.get('p50_ms')} ms, "
            f"p99 {result.get('p99_ms')} ms"
        )
        self.results["http"].append(result)
        for thing in (nginx, server):
            thing.stop()
            self.cleanup.remove(thing)

    def memory(self, name, redis=None):
        """Per-session RSS on a freshly started server for each mode, so freed memory is not reused."""
        for compression in ("deflate", None):
            if name == "ours":
                server = stack.AppServer(
                    self.project, self.app_env, workers=2, log_path=self.workdir / "serve-memory.log"
                )
                view = "core.views.CounterView"
            else:
                server, _, view = self.baseline_server(name)
            self.started(server.start())
            target = Target(name, name, server, None, view, origin=f"https://{self.domain}", host=self.domain)
            log(
                f"{name}: memory over {self.args.memory_sessions} idle sessions on a fresh server, "
                f"client offers deflate: {compression is not None}"
            )
            try:
                result = measure_memory(target, server.port, self.args.memory_sessions, compression, redis)
            finally:
                server.stop()
                self.cleanup.remove(server)
            log(
                f"  {result['kb_per_session']} KB per session ({result['negotiated']}), "
                f"{result['failures']} failures"
            )
            self.results["memory"].append(result)

    def run(self):
        args = self.args
        project = self.prepare_project()
        ours = self.start_ours()
        self.measure_frames(ours)
        targets = [t for t in ("echo", "djust_new") if t in args.only]
        if "ours" in args.only:
            self.liveview(ours)
            if args.profile_seconds and not (
                shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
            ):
                self.note("py-spy is not installed (pip install py-spy): no profile")
            elif args.profile_seconds:
                log(f"py-spy on one worker for {args.profile_seconds} s under closed-loop load")
                self.results["profile"] = profile_worker(
                    ours, self.workdir, args.profile_seconds, args.capacity_sessions
                )
            if args.wrk_seconds:
                self.http(ours)
            if args.memory_sessions:
                self.memory("ours", self.redis)
        # The service's workers sit idle while the baselines run.
        for name in targets:
            baseline = self.start_baseline(name)
            self.liveview(baseline)
            self.stop(baseline)
            if args.memory_sessions and name == "djust_new":
                self.memory("djust_new")
        if args.wrk_seconds and "ours" in args.only:
            self.http_bare()
        if args.startup_repeats:
            self.stop(ours)
            for workers in (1, 2):
                log(f"start-up: bin/serve with {workers} worker(s), {args.startup_repeats} times")
                result = measure_startup(
                    project,
                    {**self.app_env, "DJANGO_SETTINGS_MODULE": "config.settings.prod", "HOST": "127.0.0.1"},
                    workers,
                    args.startup_repeats,
                )
                log(f"  {result['seconds']}")
                self.results["startup"].append(result)
        self.results["ratios"] = ratios(self.results["liveview"], self.results["capacity"])
        self.results["targets"] = judge(self.results)
        self.results["meta"]["loadavg_at_end"] = os.getloadavg()
        self.results["meta"]["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,500,1000", help="concurrent sessions per run, comma list")
    parser.add_argument("--events", type=int, default=30, help="events per session (1/s) in each run")
    parser.add_argument("--only", default="ours,echo,djust_new", help="targets to run, comma list")
    parser.add_argument("--capacity-sessions", type=int, default=50)
    parser.add_argument("--capacity-seconds", type=float, default=10, help="0 skips the closed-loop run")
    parser.add_argument("--memory-sessions", type=int, default=1000, help="0 skips the memory runs")
    parser.add_argument("--wrk-seconds", type=int, default=10, help="0 skips HTTP")
    parser.add_argument("--wrk-connections", type=int, default=50)
    parser.add_argument("--startup-repeats", type=int, default=3, help="0 skips start-up timing")
    parser.add_argument("--profile-seconds", type=int, default=15, help="py-spy a worker this long (0: off)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds of quiet between runs")
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
    if args.server_env:
        args.server_env = list(args.server_env)

    bench = Bench(args)
    log(f"work directory {bench.workdir}")
    try:
        bench.run()
    finally:
        bench.close()
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(bench.results, indent=1) + "\n")
    log(f"wrote {output}")
    render.write(bench.results, Path(args.markdown), Path(args.plot))
    log(f"wrote {args.markdown} and {args.plot}")
    for name, verdict in bench.results["targets"].items():
        log(f"target {name}: {'MET' if verdict['met'] else 'MISSED'} {verdict}")
    if not args.keep and not args.workdir:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
