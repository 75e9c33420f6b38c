"""Real servers for the tests and benchmarks, on 127.0.0.1 and free ports.

Each server is started by the test that needs it, stopped by its pid, and
every wait is bounded in count and time. Nothing here talks to anything but
loopback.
"""

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.netns import exec_prefix
from tests.netns import run_in as netns_run_in


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


def port_open(port, host="127.0.0.1", netns=None):
    """True if something accepts TCP connections at host:port (seen from inside netns)."""

    def probe():
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((host, port)) == 0

    return netns_run_in(netns, probe, timeout=10)


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

    def __init__(self, directory, port=None, maxclients=10000, host="127.0.0.1", netns=None):
        self.directory = Path(directory)
        self.port = port or free_port()
        self.maxclients = maxclients
        # A data host of tests/cluster.py: listen on its address, inside its namespace.
        self.host, self.netns = host, netns
        self.pidfile = self.directory / "redis.pid"
        self.logfile = self.directory / "redis.log"

    @property
    def url(self):
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def start(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        subprocess.run(
            [
                *exec_prefix(self.netns),
                binary, "--bind", self.host, "--port", str(self.port),
                "--requirepass", self.password, "--save", "", "--appendonly", "no",
                "--maxclients", str(self.maxclients), "--daemonize", "yes",
                "--pidfile", str(self.pidfile), "--logfile", str(self.logfile),
                "--dir", str(self.directory),
            ],
            check=True,
            timeout=30,
        )  # fmt: skip
        wait_for(
            lambda: self.pidfile.exists() and port_open(self.port, self.host, self.netns),
            15,
            f"Redis on port {self.port}",
        )
        return self

    @property
    def pid(self):
        return int(self.pidfile.read_text().strip())

    def cli(self, *args):
        """Run redis-cli against this server and return its stdout."""
        return subprocess.run(
            [
                *exec_prefix(self.netns),
                "redis-cli",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "--no-auth-warning",
                "-a",
                self.password,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout

    def stop(self):
        if self.pidfile.exists():
            stop_pid(self.pid, timeout=15)
            self.pidfile.unlink(missing_ok=True)
        wait_for(
            lambda: not port_open(self.port, self.host, self.netns), 10, f"Redis on port {self.port} to stop"
        )


class Postgres:
    """Debian's PostgreSQL in a temporary directory, run as the postgres user."""

    def __init__(
        self, directory=None, port=None, database="app", user="app", password="rehearsal-pg",
        host="127.0.0.1", netns=None, clients=None,
    ):  # fmt: skip
        # The cluster lives in its own directory directly under /tmp, whatever
        # `directory` says: the postgres user must traverse every parent, and
        # pytest's temporary tree is private to root (mode 0700). stop() removes it.
        self.directory = Path(tempfile.mkdtemp(prefix="djust-prod-pg-", dir="/tmp"))
        self.port = port or free_port()
        self.database, self.user, self.password = database, user, password
        # A data host of tests/cluster.py: its address, its namespace, and the network
        # (CIDR) its app hosts connect from, which pg_hba.conf must let in.
        self.host, self.netns, self.clients = host, netns, clients
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not versions:
            raise RuntimeError("PostgreSQL server binaries are not installed: apt-get install postgresql")
        self.bin = versions[-1].parent
        self.data = self.directory / "data"

    @property
    def url(self):
        return f"postgres://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def _as_postgres(self, *command, netns=None):
        prefix = ["su", "postgres", "-c"] if os.geteuid() == 0 else ["sh", "-c"]
        prefix = [*exec_prefix(netns), *prefix]
        return subprocess.run(
            [*prefix, " ".join(command)], capture_output=True, text=True, timeout=60, check=True
        )

    def start(self):
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres(
            f"{self.bin}/initdb", "-D", str(self.data), "--auth=trust", "--no-sync", "-U", "postgres"
        )
        if self.clients:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {self.clients} scram-sha-256\n")
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses={self.host}"
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
            netns=self.netns,
        )
        psql = [f"{self.bin}/psql", "-h", str(self.directory), "-p", str(self.port), "-U", "postgres"]
        self._as_postgres(*psql, "-c", f"\"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'\"")
        self._as_postgres(*psql, "-c", f'"CREATE DATABASE {self.database} OWNER {self.user}"')
        return self

    def stop(self):
        """Fast shutdown (open connections are cut), retried once; fails with pg_ctl's words."""
        if not self.data.exists():
            return
        for attempt in range(2):
            try:
                self._as_postgres(
                    f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "fast", "-t", "30", "-w", "stop"
                )
                return
            except subprocess.CalledProcessError as error:
                status = subprocess.run(
                    ["su", "postgres", "-c", f"{self.bin}/pg_ctl -D {self.data} status"] if os.geteuid() == 0
                    else [f"{self.bin}/pg_ctl", "-D", str(self.data), "status"],
                    capture_output=True, text=True, timeout=30, check=False,
                )  # fmt: skip
                if status.returncode == 3:  # no server running: already stopped
                    return
                if attempt:
                    raise RuntimeError(f"pg_ctl stop failed: {error.stdout}{error.stderr}") from None
                time.sleep(1)


def direct_env(project, redis, postgres, channels=None, **extra):
    """The project's .env for bin/serve reached straight over HTTP on loopback: no proxy, no TLS.

    `channels` is a second Redis for the channel layer (the two-instance
    layout); by default everything shares `redis`.
    """
    env = project.dotenv()
    env.update(
        REDIS_URL=redis.url,
        DATABASE_URL=postgres.url,
        DJANGO_ALLOWED_HOSTS="localhost",
        # Straight to bin/serve over HTTP: no proxy, so no redirect to HTTPS.
        DJANGO_SECURE_SSL_REDIRECT="false",
        FORWARDED_ALLOW_IPS="127.0.0.1",
        DJUST_TRUSTED_PROXY_COUNT="1",
        SENTRY_DSN="",
        GRACEFUL_TIMEOUT="5",
        **extra,
    )
    env.pop("CHANNEL_REDIS_URL", None)
    if channels is not None and channels is not redis:
        env["CHANNEL_REDIS_URL"] = channels.url
    return env


class AppServer:
    """The generated project's own `bin/serve` under config.settings.prod."""

    def __init__(
        self, project, env, port=None, workers=2, log_path=None, host="127.0.0.1", netns=None, prefix=()
    ):
        self.project = project
        self.port = port or free_port()
        self.workers = workers
        # An app host of tests/cluster.py: its private address, inside its namespace.
        self.host, self.netns = host, netns
        # A command bin/serve is exec'd under (bench: `taskset -c N`, whose mask
        # uvicorn's supervisor and every worker it spawns inherit).
        self.prefix = list(prefix)
        # The caller's values (often the project's .env) first; the address and
        # worker count this test chose win over the .env's PORT=8000.
        self.env = {
            **env,
            "DJANGO_SETTINGS_MODULE": "config.settings.prod",
            "HOST": host,
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
            [*exec_prefix(self.netns), self.python, "manage.py", *args],
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
            [*exec_prefix(self.netns), *self.prefix, self.python, "bin/serve"],
            cwd=self.project.path,
            env=self.project.env(**self.env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(self._live, timeout, f"bin/serve on port {self.port}", interval=0.2)
            # Then past the workers' warm-up (core/warmup.py): /health/ says something
            # other than "warming up", 200 or a dependency that is down.
            wait_for(self._warm, timeout, f"bin/serve's workers warm on port {self.port}", interval=0.1)
        except TimeoutError as error:
            raise RuntimeError(f"{error}\n--- server log ---\n{self.tail()}") from None
        return self

    def _live(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"bin/serve exited with {self.process.returncode}\n{self.tail()}")
        return netns_run_in(self.netns, self._answers, "/health/live/", 2, timeout=10) == 200

    def _warm(self):
        self._live()
        return netns_run_in(self.netns, self._readiness, 10, timeout=15) not in (None, "warming up")

    def _readiness(self, timeout):
        """The "status" of this server's /health/ answer, whatever its HTTP status; None if none."""
        import json

        url = f"http://{self.host}:{self.port}/health/"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            body = error.read()
        except (urllib.error.URLError, OSError):
            return None
        try:
            return json.loads(body).get("status")
        except ValueError:
            return None

    def _answers(self, path, timeout, headers=None):
        """The status of GET path asked directly of this server (None if it does not answer)."""
        try:
            request = urllib.request.Request(f"http://{self.host}:{self.port}{path}", headers=headers or {})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, OSError):
            return None

    def status(self, path, netns=None, timeout=10, headers=None):
        """GET path on this server from inside netns (default: its own host), as a probe would."""
        return netns_run_in(netns or self.netns, self._answers, path, timeout, headers, timeout=timeout + 5)

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


def self_signed_certificate(directory):
    """A throwaway certificate for localhost; returns (cert, key) paths."""
    directory = Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def certificate_authority(directory, name="localhost"):
    """A throwaway CA and two leaves it signed for `name`, as a public CA would issue them.

    Returns {"ca": path, "ecdsa": (cert, key), "rsa": (cert, key)}; each cert file
    is a full chain (leaf, then the CA), like certbot's fullchain.pem. Unlike
    self_signed_certificate(), a TLS scanner can validate these against the CA.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"

    def openssl(*args):
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {result.stderr}")

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "2", "-subj", "/CN=djust-prod test CA",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    extensions = directory / "leaf.ext"
    extensions.write_text(
        f"subjectAltName=DNS:{name}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    issued = {"ca": ca}
    for kind, key_options in (("ecdsa", ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]),
                              ("rsa", ["rsa:2048"])):  # fmt: skip
        key, request, leaf = directory / f"{kind}.key", directory / f"{kind}.csr", directory / f"{kind}.leaf"
        openssl("req", "-newkey", *key_options, "-nodes", "-subj", f"/CN={name}",
                "-keyout", str(key), "-out", str(request))  # fmt: skip
        openssl("x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key), "-days", "2",
                "-set_serial", str(secrets.randbits(63)), "-extfile", str(extensions),
                "-out", str(leaf))  # fmt: skip
        chain = directory / f"{kind}-fullchain.pem"
        chain.write_text(leaf.read_text() + ca.read_text())
        issued[kind] = (chain, key)
    return issued


# A stand-in for an L7 load balancer (the load_balancer variant ships no Nginx
# site): TLS termination, forwarded headers, WebSocket upgrade, long timeouts.
LOAD_BALANCER_SITE = """
map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
upstream app { server 127.0.0.1:8000; keepalive 32; }
server { listen 80; location / { return 301 https://$host$request_uri; } }
server {
    listen 443 ssl http2;
    ssl_certificate /etc/letsencrypt/live/lb/fullchain.pem;
    ssl_certificate_key /etc/letsencrypt/live/lb/privkey.pem;
    location / {
        proxy_pass http://app;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 3600s;
    }
}
"""


class Nginx:
    """Debian's nginx running a site file under a private prefix.

    Only what cannot work on a test machine is rewritten: listen ports,
    certificate paths, the upstream address, and the /static/ alias (which
    points at /srv/<slug>/staticfiles/ in production). Pid and log paths live
    in the wrapper nginx.conf.

    A load-balancer host of tests/cluster.py (netns given) keeps the site's own
    ports 80 and 443, which are its own there, and gets `upstreams`: the site's
    `server 127.0.0.1:8000 ...;` line once per app address, the one-line change
    per app host that the site and deploy/nginx/README.md document.
    """

    def __init__(
        self, directory, site_text, upstream_port=None, static_root=None, slug=None,
        netns=None, host="127.0.0.1", upstreams=(), worker_processes="1",
    ):  # fmt: skip
        self.prefix = Path(directory)
        self.netns, self.host = netns, host
        self.cert, self.key = self_signed_certificate(self.prefix)
        if netns:
            self.http_port, self.https_port = 80, 443
            site = re.sub(
                r"(?m)^(\s*)server 127\.0\.0\.1:8000(.*)$",
                lambda line: "\n".join(f"{line[1]}server {address}{line[2]}" for address in upstreams),
                site_text,
            )
        else:
            self.http_port, self.https_port = free_port(), free_port()
            site = re.sub(r"listen \[::\]:\d+[^;]*;\n", "", site_text)
            site = re.sub(r"listen 80;", f"listen 127.0.0.1:{self.http_port};", site)
            site = re.sub(r"listen 443 ssl http2;", f"listen 127.0.0.1:{self.https_port} ssl http2;", site)
        site = re.sub(r"ssl_certificate (/etc/letsencrypt/\S+);", f"ssl_certificate {self.cert};", site)
        site = re.sub(
            r"ssl_certificate_key (/etc/letsencrypt/\S+);", f"ssl_certificate_key {self.key};", site
        )
        # Stapling is skipped for a self-signed certificate, but the file must exist.
        site = re.sub(
            r"ssl_trusted_certificate (/etc/letsencrypt/\S+);", f"ssl_trusted_certificate {self.cert};", site
        )
        site = site.replace("server 127.0.0.1:8000", f"server 127.0.0.1:{upstream_port}")
        if static_root and slug:
            site = site.replace(f"alias /srv/{slug}/staticfiles/;", f"alias {static_root}/;")
        self.site = site
        (self.prefix / "logs").mkdir(exist_ok=True)
        (self.prefix / "site.conf").write_text(site)
        temp = self.prefix / "temp"
        temp.mkdir(exist_ok=True)
        (self.prefix / "nginx.conf").write_text(
            f"user root;\nworker_processes {worker_processes};\nworker_rlimit_nofile 8192;\n"
            f"pid {self.prefix}/nginx.pid;\nerror_log {self.prefix}/logs/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            f"  access_log {self.prefix}/logs/access.log;\n"
            # As Debian's stock nginx.conf does: the site relies on it for Content-Types.
            "  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n"
            + "".join(
                f"  {kind}_temp_path {temp}/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + f"  include {self.prefix}/site.conf;\n}}\n"
        )

    @property
    def binary(self):
        return shutil.which("nginx") or "/usr/sbin/nginx"

    def _nginx(self, *args):
        return subprocess.run(
            [*exec_prefix(self.netns), self.binary, "-p", str(self.prefix),
             "-e", str(self.prefix / "logs" / "error.log"),
             "-c", str(self.prefix / "nginx.conf"), *args],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    def start(self):
        result = self._nginx()
        if result.returncode != 0:
            raise RuntimeError(f"nginx did not start:\n{result.stderr}")
        wait_for(
            lambda: port_open(self.https_port, self.host, self.netns), 15, f"nginx on port {self.https_port}"
        )
        return self

    def stop(self):
        # Read the pid first: nginx deletes its pid file while quitting.
        pidfile = self.prefix / "nginx.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        self._nginx("-s", "quit")
        stop_pid(pid, timeout=15)

    @property
    def url(self):
        return f"https://localhost:{self.https_port}"


class FakeSentry:
    """A local Sentry ingest: records every envelope a SENTRY_DSN pointing here sends."""

    def __init__(self):
        self.port = free_port()
        self.envelopes = []
        self._server = None

    @property
    def dsn(self):
        return f"http://rehearsalpublickey@127.0.0.1:{self.port}/1"

    def start(self):
        import gzip
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        envelopes = self.envelopes

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                envelopes.append(body.decode(errors="replace"))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self._server:
            self._server.shutdown()
            self._server.server_close()


# Debian's Chromium (never `playwright install`: it downloads a browser). The flags
# keep it off the network it cannot reach here: no background traffic, no QUIC.
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def launch_chromium(playwright):
    """Debian's Chromium under Playwright, headless and offline."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


# True once djust's client has mounted the page's view over the WebSocket (the
# property the client checks itself). Its body gets dj-connected a moment
# earlier, when the socket opens: a click in between goes to djust's HTTP
# fallback instead of the socket.
VIEW_MOUNTED_JS = (
    "() => Boolean(window.djust && window.djust.liveViewInstance"
    " && window.djust.liveViewInstance.viewMounted)"
)


class LiveSession:
    """One djust LiveView session over a real WebSocket (protocol: shared/DJUST-FACTS.md)."""

    def __init__(self, url, origin, view="core.views.CounterView", compression="deflate", **connect):
        self.url, self.origin, self.view, self.compression = url, origin, view, compression
        # Extra websockets.connect() arguments, e.g. host="127.0.0.1" and a verifying ssl
        # context to reach a domain's server by address (tests/test_real_hosts.py).
        self.connect = connect
        self.socket = None
        self.session_id = None
        self.extensions = None  # the server's Sec-WebSocket-Extensions answer
        self.mounted = None  # the mount frame

    async def open(self, timeout=15):
        import json
        import ssl

        import websockets

        context = None
        if self.url.startswith("wss://"):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        options = {
            "origin": self.origin,
            "ssl": context,
            "open_timeout": timeout,
            "compression": self.compression,
            "ping_interval": None,
            "max_size": 2**22,
        }
        self.socket = await websockets.connect(self.url, **{**options, **self.connect})
        self.extensions = self.socket.response.headers.get("Sec-WebSocket-Extensions")
        hello = json.loads(await asyncio_wait(self.socket.recv(), timeout))
        if hello.get("type") != "connect":
            raise AssertionError(f"expected a connect message, got {hello}")
        self.session_id = hello.get("session_id")
        await self.socket.send(
            json.dumps(
                {"type": "mount", "view": self.view, "params": {}, "url": "/",
                 "has_prerendered": False, "client_timezone": "UTC"}
            )
        )  # fmt: skip
        mounted = await self.receive(lambda m: m.get("type") in ("mount", "error"), timeout)
        if mounted["type"] != "mount":
            raise AssertionError(f"mount refused: {mounted}")
        self.mounted = mounted  # its html is the page as first rendered
        return self

    async def receive(self, accept, timeout=15):
        """The next message accept(message) is true for (others are skipped)."""
        import json

        deadline = time.monotonic() + timeout
        for _ in range(1000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = json.loads(await asyncio_wait(self.socket.recv(), remaining))
            if accept(message):
                return message
        raise TimeoutError(f"no matching message within {timeout} s")

    async def increment(self, ref, timeout=15):
        """Send the counter's event; return the patch answering it."""
        import json

        await self.socket.send(json.dumps({"type": "event", "event": "increment", "params": {}, "ref": ref}))
        return await self.receive(lambda m: m.get("ref") == ref, timeout)

    async def close(self):
        if self.socket is not None:
            await self.socket.close()


async def asyncio_wait(awaitable, timeout):
    import asyncio

    return await asyncio.wait_for(awaitable, timeout)
