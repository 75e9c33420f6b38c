"""Measurements beside the load runs: frame sizes, memory per idle WebSocket, a py-spy profile.

Start-up time is measured in bench/procs.py.
"""

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

from bench.load import run_k6
from bench.procs import cpu_seconds, find_tool, rss_kb

# --- frames ----------------------------------------------------------------------


def measure_frames(target):
    """Length of the mount HTML and of a patch frame the service sends, and that patch."""
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
    return {"mount_html_chars": html, "patch_frame_chars": patch_len, "patch_example": patch}


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
