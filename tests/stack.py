"""Real servers for the tests and benchmarks, on 127.0.0.1 and free ports.

Each server is started by the test that needs it, stopped by its pid, and
every wait is bounded in count and time. Nothing here talks to anything but
loopback.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, what, interval=0.1):
    """Poll predicate() until it is truthy; raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")


def port_open(port, host="127.0.0.1"):
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def stop_pid(pid, sig=signal.SIGTERM, timeout=30):
    """Send sig to pid and wait until it is gone (SIGKILL after timeout). True if it exited in time."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return True
        except ChildProcessError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


class RedisServer:
    """Debian's redis-server with a password, no persistence, on a free port."""

    password = "rehearsal-redis-password"

    def __init__(self, directory, port=None, maxclients=10000):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.maxclients = maxclients
        self.pidfile = self.directory / "redis.pid"
        self.logfile = self.directory / "redis.log"

    @property
    def url(self):
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        subprocess.run(
            [
                binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--requirepass", self.password, "--save", "", "--appendonly", "no",
                "--maxclients", str(self.maxclients), "--daemonize", "yes",
                "--pidfile", str(self.pidfile), "--logfile", str(self.logfile),
                "--dir", str(self.directory),
            ],
            check=True,
            timeout=30,
        )  # fmt: skip
        wait_for(lambda: self.pidfile.exists() and port_open(self.port), 15, f"Redis on port {self.port}")
        return self

    @property
    def pid(self):
        return int(self.pidfile.read_text().strip())

    def cli(self, *args):
        """Run redis-cli against this server and return its stdout."""
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), "--no-auth-warning", "-a", self.password, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    def stop(self):
        if self.pidfile.exists():
            stop_pid(self.pid, timeout=15)
            self.pidfile.unlink(missing_ok=True)
        wait_for(lambda: not port_open(self.port), 10, f"Redis on port {self.port} to stop")


class Postgres:
    """Debian's PostgreSQL in a temporary directory, run as the postgres user."""

    def __init__(self, directory, port=None, database="app", user="app", password="rehearsal-pg"):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.database, self.user, self.password = database, user, password
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions:
            raise RuntimeError("PostgreSQL server binaries are not installed: apt-get install postgresql")
        self.bin = versions[-1].parent
        self.data = self.directory / "data"

    @property
    def url(self):
        return f"postgres://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _as_postgres(self, *command):
        prefix = ["su", "postgres", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
        return subprocess.run(
            [*prefix, " ".join(command)], capture_output=True, text=True, timeout=60, check=True
        )

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # postgres must traverse every parent and own its directory.
            for parent in [self.directory, *self.directory.parents]:
                parent.chmod(parent.stat().st_mode | 0o011)
            shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres(
            f"{self.bin}/initdb", "-D", str(self.data), "--auth=trust", "--no-sync", "-U", "postgres"
        )
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c max_connections=300"
        )
        self._as_postgres(
            f"{self.bin}/pg_ctl",
            "-D",
            str(self.data),
            "-o",
            f"'{options}'",
            "-l",
            str(self.directory / "pg.log"),
            "-w",
            "start",
        )
        psql = [f"{self.bin}/psql", "-h", str(self.directory), "-p", str(self.port), "-U", "postgres"]
        self._as_postgres(*psql, "-c", f"\"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'\"")
        self._as_postgres(*psql, "-c", f'"CREATE DATABASE {self.database} OWNER {self.user}"')
        return self

    def stop(self):
        if self.data.exists():
            self._as_postgres(f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


class AppServer:
    """The generated project's own `bin/serve` under config.settings.prod."""

    def __init__(self, project, env, port=None, workers=2, log_path=None):
        self.project = project
        self.port = port or free_port()
        self.workers = workers
        # The caller's values (often the project's .env) first; the address and
        # worker count this test chose win over the .env's PORT=8000.
        self.env = {
            **env,
            "DJANGO_SETTINGS_MODULE": "config.settings.prod",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": str(workers),
        }
        self.log_path = Path(log_path or project.path / f"serve-{self.port}.log")
        self.process = None

    @property
    def python(self):
        return str(self.project.path / ".venv" / "bin" / "python")

    def manage(self, *args, timeout=300):
        """Run manage.py with the production environment; fail with its output."""
        result = subprocess.run(
            [self.python, "manage.py", *args],
            cwd=self.project.path,
            env=self.project.env(**self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def prepare(self):
        self.project.sync()
        self.manage("migrate", "--noinput")
        self.manage("collectstatic", "--noinput", "-v0")
        return self

    def start(self, timeout=60):
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.python, "bin/serve"],
            cwd=self.project.path,
            env=self.project.env(**self.env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._live, timeout, f"bin/serve on port {self.port}", interval=0.2)
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n--- server log ---\n{self.tail()}") from None
        return self

    def _live(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"bin/serve exited with {self.process.returncode}\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/live/", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @property
    def pid(self):
        return self.process.pid

    def worker_pids(self):
        """Pids of the server's worker processes (children of bin/serve's process)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            pids = [int(pid) for pid in children.read_text().split()]
        except FileNotFoundError:
            return []
        # uvicorn's supervisor also starts multiprocessing's resource tracker: skip it.
        workers = []
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except FileNotFoundError:
                continue
            if "resource_tracker" not in cmdline:
                workers.append(pid)
        return workers

    def stop(self, sig=signal.SIGTERM, timeout=40):
        """Stop by pid; return the exit code (None if it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
            return None
        finally:
            self.log.close()

    def tail(self, lines=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_lines(self):
        return self.log_path.read_text(errors="replace").splitlines()
