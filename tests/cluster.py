"""A small production cluster on one machine: hosts in network namespaces.

    client ──┐                        ┌── app1 ──┐
             ├── front 198.18.0.0/24 ─┤          ├── back 198.18.1.0/24 ── data
       lb ───┘                        └── app2 ──┘

Five hosts, each a network namespace named PREFIX-<host>: `lb` runs Nginx with
the generated site, `app1` and `app2` run the project's own `bin/serve` (two
workers, production settings), `data` runs the runbook's two Redis instances
(main and channel layer, with their password) and PostgreSQL, `client` drives
load from eight addresses. Two bridges live in a
namespace of their own (PREFIX-net): the front network, where users and the
proxy reach the app hosts, and the back network, where the app hosts reach
their data, so a host can lose its data link and keep its users' link, as in a
real private network. No namespace has a default route; every address is in
198.18.0.0/15 (RFC 2544).

Processes are started and stopped by pid: stop() is SIGTERM, as systemd stops
a unit; lose() is SIGKILL to every process of a host, as a power cut would. The
servers themselves are tests/stack.py's, run through `ip netns exec`.
Everything is removed by name when the cluster closes (a finalizer too), and a
run first removes whatever an earlier run with the same prefix left behind.
"""

import contextlib
import os
import shutil
import signal
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from tests import netns
from tests.stack import AppServer, Nginx, Postgres, RedisServer, wait_for

FRONT, BACK = "198.18.0", "198.18.1"
APP_PORT = 8000


@dataclass
class Host:
    """One namespace: its name, its addresses on the front and back networks."""

    role: str
    netns: str
    front: str | None = None
    back: str | None = None
    extra_front: list = field(default_factory=list)  # more client addresses


def missing_requirements():
    """Why a cluster cannot run here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nginx", "redis-server"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (./scripts/test installs it)"
    return None


def default_prefix():
    """Unique per test process, short enough for interface and namespace names."""
    return f"djc{os.getpid()}"


class Network:
    """The namespaces, bridges and veths; remove() deletes them all by name."""

    HOSTS: ClassVar[dict] = {
        "lb": {"front": f"{FRONT}.2"},
        "app1": {"front": f"{FRONT}.11", "back": f"{BACK}.11"},
        "app2": {"front": f"{FRONT}.12", "back": f"{BACK}.12"},
        "data": {"back": f"{BACK}.20"},
        # Several addresses: users behind different NATs, for the sticky-sessions checks.
        "client": {"front": f"{FRONT}.30", "extra_front": [f"{FRONT}.{n}" for n in range(31, 38)]},
    }

    def __init__(self, prefix=None):
        self.prefix = prefix or default_prefix()
        self.bridges = f"{self.prefix}-net"
        self.hosts = {
            role: Host(role, f"{self.prefix}-{role}", **addresses) for role, addresses in self.HOSTS.items()
        }
        # Whatever happens to the test, the namespaces go when this object does.
        self._finalizer = weakref.finalize(self, netns.remove, f"{self.prefix}-")

    def __getitem__(self, role):
        return self.hosts[role]

    def create(self):
        netns.remove(f"{self.prefix}-")  # a crashed earlier run with this prefix
        netns.ip("netns", "add", self.bridges)
        for bridge in ("front", "back"):
            netns.ip("link", "add", bridge, "type", "bridge", netns=self.bridges)
            netns.ip("link", "set", bridge, "up", netns=self.bridges)
        for host in self.hosts.values():
            netns.ip("netns", "add", host.netns)
            netns.ip("link", "set", "lo", "up", netns=host.netns)
            for side, address in (("front", host.front), ("back", host.back)):
                if address is None:
                    continue
                inside, port = f"{side}0", f"{host.role}-{side[0]}"
                netns.ip("link", "add", inside, "netns", host.netns, "type", "veth",
                         "peer", "name", port, "netns", self.bridges)  # fmt: skip
                netns.ip("link", "set", port, "master", side, "up", netns=self.bridges)
                addresses = [address, *(host.extra_front if side == "front" else [])]
                for each in addresses:
                    netns.ip("addr", "add", f"{each}/24", "dev", inside, netns=host.netns)
                netns.ip("link", "set", inside, "up", netns=host.netns)
        for host in self.hosts.values():
            routes = netns.ip("route", "show", "default", netns=host.netns).stdout.strip()
            if routes:
                raise RuntimeError(f"{host.netns} has a default route: {routes}")
        return self

    def set_data_link(self, role, up):
        """Take a host's back-network port up or down at the bridge, as a switch port would.

        The host's own interface stays up (no carrier), so its packets to the
        data host vanish: connections time out instead of being refused.
        """
        netns.ip("link", "set", f"{role}-b", "up" if up else "down", netns=self.bridges)

    def remove(self):
        self._finalizer()


class Cluster:
    """The service on two app hosts behind Nginx, with its data on a third host."""

    def __init__(self, project, directory, prefix=None, workers=2):
        self.project = project
        self.directory = Path(directory)
        self.network = Network(prefix)
        self.workers = workers
        self.redis = self.channels = self.postgres = self.nginx = None
        self.apps = {}

    # --- start ---------------------------------------------------------------------

    def start(self):
        try:
            self.network.create()
            self.start_data()
            self.start_apps()
            self.start_lb()
        except BaseException:
            self.close()
            raise
        return self

    def start_data(self):
        data = self.network["data"]
        # The two Redis instances of deploy/systemd/README.md "3. Redis": the main one
        # (cache, sessions, djust state) may evict keys with a TTL; the channel layer's
        # never evicts.
        for name, port, limit, policy in (("redis", 6379, "256mb", "volatile-lru"),
                                          ("channels", 6380, "64mb", "noeviction")):  # fmt: skip
            (self.directory / name).mkdir(parents=True, exist_ok=True)
            server = RedisServer(self.directory / name, port=port, host=data.back, netns=data.netns).start()
            server.cli("CONFIG", "SET", "maxmemory", limit)
            server.cli("CONFIG", "SET", "maxmemory-policy", policy)
            setattr(self, "redis" if name == "redis" else "channels", server)
        if self.project.answers["database"] == "postgresql":
            self.postgres = Postgres(
                port=5432, host=data.back, netns=data.netns, clients=f"{BACK}.0/24"
            ).start()

    def app_env(self):
        """The env file every app host shares (same secrets, same data URLs), as the runbook says."""
        env = self.project.dotenv()
        env.update(
            REDIS_URL=self.redis.url,
            CHANNEL_REDIS_URL=self.channels.url,
            DJANGO_ALLOWED_HOSTS=self.project.domain,
            FORWARDED_ALLOW_IPS=self.network["lb"].front,
            DJUST_TRUSTED_PROXY_COUNT="1",
            SENTRY_DSN="",
            GRACEFUL_TIMEOUT="10",
        )
        if self.postgres:
            env["DATABASE_URL"] = self.postgres.url
        else:
            env["DATABASE_URL"] = f"sqlite:///{self.directory / 'db.sqlite3'}"
        return env

    def start_apps(self):
        env = self.app_env()
        for role in ("app1", "app2"):
            host = self.network[role]
            self.apps[role] = AppServer(
                self.project, env, port=APP_PORT, workers=self.workers,
                log_path=self.directory / f"{role}.log", host=host.front, netns=host.netns,
            )  # fmt: skip
        # migrate once (from one host), collectstatic into the shared checkout.
        self.apps["app1"].prepare()
        for app in self.apps.values():
            app.start()

    def start_lb(self):
        lb = self.network["lb"]
        site = (self.project.path / "deploy" / "nginx" / f"{self.project.slug}.conf").read_text()
        (self.directory / "nginx").mkdir(exist_ok=True)
        self.nginx = Nginx(
            self.directory / "nginx", site, static_root=self.project.path / "staticfiles",
            slug=self.project.slug, netns=lb.netns, host=lb.front,
            upstreams=[f"{self.network[role].front}:{APP_PORT}" for role in ("app1", "app2")],
            worker_processes="auto",  # Debian's nginx.conf: one per core, sharing the upstream zone
        )  # fmt: skip
        self.nginx.start()

    # --- what the tests do to hosts ---------------------------------------------------

    def stop(self, role, timeout=40):
        """`systemctl stop`: SIGTERM to the server's pid; its exit code."""
        return self.apps[role].stop(signal.SIGTERM, timeout=timeout)

    def start_app(self, role, timeout=60):
        """`systemctl start`, returning once /health/live/ answers."""
        self.apps[role].start(timeout=timeout)

    def wait_healthy(self, role, timeout=30):
        """The runbook's wait: /health/ on that host answers 200. Seconds waited."""
        started = time.monotonic()
        wait_for(lambda: self.health(role) == 200, timeout, f"/health/ 200 on {role}", interval=0.1)
        return time.monotonic() - started

    def health(self, role, path="/health/"):
        """Status of path on the app host, asked from the lb host, as Nginx or an operator would."""
        return self.apps[role].status(path, netns=self.network["lb"].netns)

    def page(self, role, path="/"):
        """Status of a page load asked of one app host directly, as Nginx forwards it."""
        headers = {"Host": self.project.domain, "X-Forwarded-Proto": "https"}
        return self.apps[role].status(path, netns=self.network["lb"].netns, headers=headers)

    def lose(self, role):
        """Power cut: SIGKILL to every process of the host at once. The pids killed."""
        killed = netns.kill_all(self.network[role].netns)
        app = self.apps[role]
        with contextlib.suppress(Exception):
            app.process.wait(timeout=10)
            app.log.close()
        return killed

    def users(self, source=None, **options):
        """Arguments for cluster_load's PageLoads and Visitors: the client host, through the balancer."""
        client = self.network["client"]
        return dict(
            namespace=client.netns,
            balancer=self.network["lb"].front,
            domain=self.project.domain,
            source=source or client.front,
            **options,
        )

    def client_addresses(self):
        """The client host's addresses: users behind eight different NATs."""
        client = self.network["client"]
        return [client.front, *client.extra_front]

    def sockets_accepted(self, address):
        """{role: WebSockets that host accepted from this client address}, from its own log.

        bin/serve logs each accepted WebSocket with the client's address, which
        it reads from X-Forwarded-For because the balancer is trusted
        (FORWARDED_ALLOW_IPS): what an operator would grep for, no test-only header.
        """
        needle = f'{address}:0 - \\"WebSocket /ws/live/\\" [accepted]'
        return {role: sum(needle in line for line in app.log_lines()) for role, app in self.apps.items()}

    def logs(self, role, lines=30):
        return f"--- {role} log (tail) ---\n{self.apps[role].tail(lines)}"

    def nginx_errors(self, lines=20):
        path = self.directory / "nginx" / "logs" / "error.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "--- nginx error.log (tail) ---\n" + "\n".join(text.splitlines()[-lines:])

    # --- teardown ---------------------------------------------------------------------

    def close(self):
        """Stop everything by pid, then remove the network; raise what failed, after all of it."""
        errors = []
        for stop in (
            *(app.stop for app in self.apps.values()),
            *((self.nginx.stop,) if self.nginx else ()),
            *((self.postgres.stop,) if self.postgres else ()),
            *((self.redis.stop,) if self.redis else ()),
            *((self.channels.stop,) if self.channels else ()),
        ):
            try:
                stop()
            except Exception as error:  # keep tearing down; report at the end
                errors.append(error)
        if self.postgres:
            shutil.rmtree(self.postgres.directory, ignore_errors=True)
        try:
            self.network.remove()
        except Exception as error:
            errors.append(error)
        if errors:
            raise RuntimeError(f"cluster teardown: {errors}")
