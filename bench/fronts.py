"""The Nginx in front of each server, and a Target: a server with its front, to load."""

import contextlib
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import LOAD_CPU, NO_PINNING, Server, children, find_tool
from tests import stack

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

    def __init__(self, directory, upstream_port, pinning=NO_PINNING):
        self.dir = Path(directory)
        self.port = stack.free_port()
        self.upstream = upstream_port
        self.binary = find_tool("nginx")
        self.pinning = pinning

    def _nginx(self, *args, prefix=()):
        return subprocess.run(
            [
                *prefix,
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
        self._nginx(prefix=self.pinning.load())
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


def lift_per_address_limits(site):
    """The site with its per-address WebSocket limits lifted: every load session comes from
    127.0.0.1, where the real site would see one address per user (the djust new baseline's
    per-IP cap is raised for the same reason). Nothing else of the site changes."""
    site = re.sub(r"rate=\d+r/s;", "rate=100000r/s;", site)
    return re.sub(r"(limit_conn \S+) \d+;", r"\1 60000;", site)


class GeneratedSite(NginxFront):
    """The generated deploy/nginx/<slug>.conf run by tests/stack.py's Nginx (ports and certificate moved)."""

    def __init__(self, directory, upstream_port, project, pinning=NO_PINNING):
        self.project = project
        self.pinning = pinning
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
            lift_per_address_limits(self.site.read_text()),
            self.upstream,
            static_root=self.project.path / "staticfiles",
            slug=self.project.slug,
        )
        self.nginx.start()
        self.port = self.nginx.https_port
        # stack.Nginx starts it itself: pin the master and its workers once they run.
        self.pinning.pin_running(self.pids()[0] if self.pids() else None, LOAD_CPU)
        return self

    def stop(self):
        if self.nginx:
            self.nginx.stop()


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
