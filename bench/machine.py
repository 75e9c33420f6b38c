"""Facts about the machine and the software measured, recorded beside the numbers."""

import contextlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

from bench.procs import find_tool


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
