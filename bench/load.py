"""Load generators: k6 drives LiveView sessions, wrk drives HTTP."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

from bench.procs import cpu_seconds, find_tool, log

K6_SCRIPT = Path(__file__).resolve().parent / "k6" / "liveview.js"


# --- k6 --------------------------------------------------------------------------


def run_k6(
    target, sessions, events, workdir, mode="open", duration_s=None, ramp_ms=None, compression="", prefix=()
):
    """One k6 run; returns the numbers BENCHMARKS.md shows, plus the CPU each side used."""
    k6 = find_tool("k6")
    stem = f"k6-{target.name}-{mode}-{sessions}-{time.monotonic_ns()}"
    out = Path(workdir) / f"{stem}.json"
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
    argv = [*prefix, k6, "run", "--quiet", "--no-usage-report", "--no-color"]
    for key, value in env_args.items():
        argv += ["-e", f"{key}={value}"]
    argv.append(str(K6_SCRIPT))
    window_s = duration_s if mode == "closed" else events
    bound = ramp_ms / 1000 + 2 + window_s + 5 + 120
    server_pids, nginx_pids = target.server_pids(), target.nginx.pids()
    cpu0_server, cpu0_nginx = cpu_seconds(server_pids), cpu_seconds(nginx_pids)
    started = time.monotonic()
    k6_log = (Path(workdir) / f"{stem}.log").open("wb")
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


def run_wrk(url, host, seconds, connections, threads=2, server_pids=(), prefix=()):
    """One wrk run; with server_pids, the server CPU it cost (seconds, and ms per request)."""
    wrk = find_tool("wrk")
    argv = [
        *prefix,
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
    cpu0 = cpu_seconds(server_pids)
    output = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    server_cpu = cpu_seconds(server_pids) - cpu0
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
    result["server_cpu_s"] = round(server_cpu, 3)
    requests = result["requests"]
    result["server_cpu_ms_per_request"] = round(1000 * server_cpu / requests, 3) if requests else None
    result["raw"] = output.strip().splitlines()
    return result
