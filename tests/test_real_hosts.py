"""Real hosts: the generated runbook, typed literally into a fresh Debian 12 host under systemd.

For each host variant the test generates the project, runs the runbook's
workstation block in it (here, the test machine is the workstation), makes the
repository the host clones, boots a fresh Debian 12 host (tests/hosts.py) and
runs every ```sh block of the install, in order, as ONE root shell there. Lines
this machine cannot run for real are replaced, each by one named stand-in
(STAND_INS); blocks deliberately not run are listed with a reason (NOT_RUN), and
a test proves every block of the runbook files is one or the other.

Then it checks what an operator would: the unit, health over HTTPS and by IP,
LiveView sessions through the proxy, JSON logs, a new version deployed, restart,
reload (Gunicorn), stop, the clearsessions timer, a power cycle, and a missing
secret. Each failure shows `systemctl status` and the journal tail.

Hosts use this machine's own ports (80, 443, 5432, 6379, 6380, 8000), so they run one at
a time: every host test is in one xdist group, and tests/hosts.py holds a file lock.
"""

import asyncio
import contextlib
import http.client
import json
import os
import re
import shlex
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import hosts
from tests.conftest import bake_variant
from tests.stack import LiveSession, certificate_authority, wait_for
from tests.variants import REHEARSAL_VARIANTS

# The variants booted on a real host, by their rehearsal names.
HOST_VARIANTS = ("default", "sqlite_gunicorn", "load_balancer")
HOST_GROUP = "real-hosts"  # one xdist worker runs every host, one after the other

# --- What the runbook is, and how it is run ----------------------------------------------

# Every file of a generated project with commands a user types. Each of their ```sh
# blocks is run below or listed in NOT_RUN.
RUNBOOK_FILES = (
    "deploy/systemd/README.md",
    "deploy/nginx/README.md",
    "deploy/load-balancer/README.md",
    "docs/deployment.md",
    "deploy/monitoring/README.md",
    "README.md",
)
SYSTEMD = "deploy/systemd/README.md"
NGINX = "deploy/nginx/README.md"


def always(answers):
    return True


def postgresql(answers):
    return answers["database"] == "postgresql"


def nginx(answers):
    return answers["proxy"] == "nginx"


def load_balancer(answers):
    return answers["proxy"] == "load_balancer"


# (file, heading, when): every block under the heading, in this order. Headings
# lose their "N. " numbering (tests/hosts.py).
WORKSTATION = [(SYSTEMD, "Before the first deploy (on your workstation)", always)]
INSTALL = [
    (SYSTEMD, "Packages, uv and Python", always),
    (SYSTEMD, "The service user, the code and its secrets", always),
    (SYSTEMD, "Redis", always),
    (SYSTEMD, "PostgreSQL", postgresql),
    (SYSTEMD, "Dependencies, database, static files", always),
    (SYSTEMD, "Start the service", always),
    (NGINX, "Install (Debian 12, as root)", nginx),
]
NEW_VERSION = [(SYSTEMD, "Deploying a new version", always)]
PHASES = {"workstation": WORKSTATION, "install": INSTALL, "new version": NEW_VERSION}

NOT_RUN = {
    ("deploy/monitoring/README.md", "Check the files"): (
        "promtool on the files themselves, no host needed: tests/test_monitoring.py runs this block in "
        "the baked project"
    ),
    ("deploy/monitoring/README.md", "Set up Prometheus (on the monitoring host, Debian 12, as root)"): (
        "a separate monitoring host: tests/test_monitoring.py runs Debian's prometheus with this "
        "prometheus.yml and alerts.yml against the live service instead"
    ),
    ("docs/deployment.md", "Path 2: Docker"): (
        "the Docker path: no Docker engine on this machine; tests/test_deploy_files.py checks the "
        "Dockerfile (hadolint) and compose.yaml (structure)"
    ),
    (NGINX, "Several app hosts"): (
        "a second app host and its private addresses: one host boots here at a time, on this "
        "machine's network; tests/test_cluster.py runs two app hosts and a data host in network "
        "namespaces, with HOST, FORWARDED_ALLOW_IPS and a server line per app host set as here"
    ),
    (NGINX, "Rolling deploy"): (
        "several app hosts: tests/test_cluster.py runs the procedure (stop, start, wait for /health/ 200 "
        "on that host, next) on two hosts under load, with bin/serve in place of systemd"
    ),
    ("README.md", "My djust Service"): (
        "development commands (runserver, the project's tests and linters), not a deployment: "
        "tests/test_first_command.py types them (through the template README's first command, "
        "`make dev` and `make test`) on a fresh Debian 12 host; tests/test_bake.py runs the "
        "tests and linters of every variant"
    ),
    ("README.md", "Updating from the template"): (
        "updating a generated project from a newer template release (cruft), not a deployment: "
        "tests/test_update.py runs that path"
    ),
    ("README.md", "Production"): (
        "bin/serve by hand with uv run and .env, for a machine without systemd: the same bin/serve and "
        "settings run under systemd here, and in tests/test_rehearsal.py by hand"
    ),
}


@dataclass(frozen=True)
class StandIn:
    """One line (or part of one) replaced because this machine cannot do the real thing."""

    phase: str
    find: str  # text of a logical line (continuations joined); {placeholders} from values()
    replace: str
    why: str
    when: object = always


CERTBOT_STAND_IN = (
    # What the CA would fetch: a token under the webroot, over HTTP on port 80 for the domain.
    "token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \\n')"
    " && mkdir -p /var/www/html/.well-known/acme-challenge"
    ' && echo "$token" > "/var/www/html/.well-known/acme-challenge/$token"'
    ' && test "$(curl -fsS "http://{domain}/.well-known/acme-challenge/$token")" = "$token"'
    ' && rm "/var/www/html/.well-known/acme-challenge/$token"'
    # Where certbot writes (ECDSA, its default); signed by a CA this host trusts, as it
    # trusts Let's Encrypt's. chain.pem is the issuer, which the site's OCSP stapling reads.
    " && install -D -m 0644 {staging}/certificate/fullchain.pem /etc/letsencrypt/live/{domain}/fullchain.pem"
    " && install -D -m 0644 {staging}/certificate/chain.pem /etc/letsencrypt/live/{domain}/chain.pem"
    " && install -D -m 0600 {staging}/certificate/privkey.pem /etc/letsencrypt/live/{domain}/privkey.pem"
    " && install -m 0644 {staging}/certificate/ca.pem /usr/local/share/ca-certificates/djust-prod-test-ca.crt"
    " && update-ca-certificates"
)

STAND_INS = [
    StandIn(
        "workstation",
        "git push",
        ": git push: the host clones this repository directly",
        "there is no remote: the host clones the local repository (next stand-in)",
    ),
    StandIn(
        "install",
        "git clone <your repository> /srv/{slug}",
        "git clone {staging}/repository /srv/{slug}",
        "the repository a user clones: a local git repository of the generated project, "
        "bind-mounted read-only into the host",
    ),
    StandIn(
        "install",
        "uv python install {python}",
        'mkdir -p "$UV_PYTHON_INSTALL_DIR" && mv {staging}/python/{python_name} "$UV_PYTHON_INSTALL_DIR"/'
        " && uv python find --managed-python {python}",
        "uv cannot download interpreters here: the test puts a relocatable CPython where "
        "`uv python install` would (uv's own build when this machine's uv has one, else pyenv's with "
        "a relative RUNPATH), and uv must then find it as a managed install",
    ),
    StandIn(
        "install",
        "certbot certonly --webroot -w /var/www/html -d {domain} --non-interactive --agree-tos -m {email}"
        ' --deploy-hook "systemctl reload nginx"',
        CERTBOT_STAND_IN,
        "no certificate authority can reach this machine: the stand-in proves what the CA needs at this "
        "moment (a token under the webroot served on http://DOMAIN/.well-known/acme-challenge/, DOMAIN "
        "resolving to this host through /etc/hosts), then writes a certificate where certbot would, "
        "signed by a test CA the host trusts",
        nginx,
    ),
    StandIn(
        "install",
        "HOST=<private address of this host>",
        "HOST=127.0.0.1",
        "the host shares this machine's network and its balancer (an Nginx on the host) reaches the "
        "app on 127.0.0.1; probes by IP may only target 127.0.0.1 here",
        load_balancer,
    ),
    StandIn(
        "install",
        "FORWARDED_ALLOW_IPS=<subnet of the load balancer>",
        "FORWARDED_ALLOW_IPS=127.0.0.1/32",
        "the stand-in balancer connects from 127.0.0.1",
        load_balancer,
    ),
]

# Only speed, never behaviour: caches shared between hosts (bind mounts).
SPEED_BINDS = {
    "/var/cache/apt/archives": hosts.CACHE / "apt-archives",  # .debs download once per run
    "/root/.cache/pip": hosts.CACHE / "pip-cache",  # uv's wheel from PyPI, once
}

# The load-balancer variant's balancer: an Nginx on the host, written from the rows of
# deploy/load-balancer/README.md (TLS for the domain, 80 -> 443, WebSocket upgrade,
# an idle timeout of an hour, X-Forwarded-Proto and -For, the app on HOST:8000).
BALANCER_STAND_IN = """# STAND-IN for the load balancer (tests/test_real_hosts.py)
map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
server {{
    listen 80;
    location / {{ return 301 https://$host$request_uri; }}
}}
server {{
    listen 443 ssl http2;
    ssl_certificate /etc/ssl/balancer/fullchain.pem;
    ssl_certificate_key /etc/ssl/balancer/privkey.pem;
    location / {{
        proxy_pass http://127.0.0.1:8000;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 3600s;
        proxy_send_timeout 3600s;
    }}
}}
"""


def values(project, python_name="cpython-X.Y.Z-linux-x86_64-gnu"):
    """What the stand-in templates are filled with."""
    return {
        "slug": project.slug,
        "domain": project.domain,
        "email": project.answers.get("email", "you@example.com"),
        "python": project.answers["python_version"],
        "python_name": python_name,
        "staging": hosts.STAGING,
    }


def runbook_blocks(project):
    """Every ```sh block of the project's runbook files."""
    return [
        block
        for relative in RUNBOOK_FILES
        if (project.path / relative).exists()
        for block in hosts.sh_blocks(project.path, relative)
    ]


def phase_blocks(project, phase):
    """The blocks a phase runs, in order; fails when a listed heading has none."""
    blocks = runbook_blocks(project)
    chosen = []
    for relative, heading, when in PHASES[phase]:
        if not when(project.answers):
            continue
        found = [b for b in blocks if b.file == relative and b.heading == heading]
        if not found:
            headings = sorted({b.heading for b in blocks if b.file == relative})
            raise AssertionError(f"{relative}: no sh block under {heading!r}; its headings: {headings}")
        chosen += found
    return chosen


def phase_script(project, phase, python_name="cpython-X.Y.Z-linux-x86_64-gnu"):
    """The phase's blocks as one bash script, stand-ins applied; (script, {stand-in: uses})."""
    filled = values(project, python_name)
    uses = {}
    parts = ["set -euxo pipefail"]
    for block in phase_blocks(project, phase):
        parts.append(f": 'RUNBOOK {block.file} :: {block.heading} (block {block.number})'")
        for line in hosts.logical_lines(block.text):
            for stand_in in STAND_INS:
                find = stand_in.find.format(**filled)
                if stand_in.phase == phase and find in line:
                    # A line of its own (xtrace shows it): a comment on the line could land
                    # inside a quoted sed expression and from there in the env file.
                    parts.append(f": {shlex.quote('STAND-IN for: ' + find)}")
                    line = line.replace(find, stand_in.replace.format(**filled))
                    uses[stand_in] = uses.get(stand_in, 0) + 1
            parts.append(line)
    return "\n".join(parts) + "\n", uses


# --- Fast checks: the tables above match the generated runbook -------------------------------

# Ids are variant ids, so the fast tier's -k groups (by Python version) select them.
FAST_PARAMS = [
    pytest.param(variant, id=variant, marks=pytest.mark.xdist_group(variant))
    for variant in (REHEARSAL_VARIANTS[name] for name in HOST_VARIANTS)
]


@pytest.mark.parametrize("variant", FAST_PARAMS)
def test_every_runbook_block_is_run_or_listed_as_not_run(bake, variant):
    project = bake(variant)
    blocks = runbook_blocks(project)
    assert blocks, "no sh block in the runbook files"
    run = {b for phase in PHASES for b in phase_blocks(project, phase)}
    escaped = [
        f"{b.file} :: {b.heading} (block {b.number}):\n{b.text}"
        for b in blocks
        if b not in run and (b.file, b.heading) not in NOT_RUN
    ]
    assert not escaped, "sh blocks neither run by this test nor listed in NOT_RUN:\n\n" + "\n\n".join(escaped)
    # Headings of a file this variant does not generate (the nginx README of the load-balancer
    # variant) cannot be stale here.
    listed = [key for key in NOT_RUN if (project.path / key[0]).exists()]
    stale = [key for key in listed if key not in {(b.file, b.heading) for b in blocks}]
    assert not stale, f"NOT_RUN lists headings with no sh block: {stale}"


@pytest.mark.parametrize("variant", FAST_PARAMS)
def test_every_stand_in_replaces_exactly_one_line(bake, variant):
    project = bake(variant)
    for phase in PHASES:
        script, uses = phase_script(project, phase)
        for stand_in in STAND_INS:
            if stand_in.phase != phase:
                continue
            expected = 1 if stand_in.when(project.answers) else 0
            assert uses.get(stand_in, 0) == expected, (
                f"stand-in for {stand_in.find!r} replaced {uses.get(stand_in, 0)} lines of the "
                f"{phase} phase, expected {expected}:\n{script}"
            )
        commands = "\n".join(line for line in script.splitlines() if not line.startswith(": 'STAND-IN"))
        placeholders = re.findall(r"<[a-z][a-z ]+>", commands)
        assert not placeholders, f"placeholders left for the user in the {phase} phase: {placeholders}"


# --- The host ------------------------------------------------------------------------------


def tls_context(ca_file):
    """Verifies the host's certificate against the test CA, host name included."""
    return ssl.create_default_context(cafile=str(ca_file))


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a domain (SNI, certificate check, Host header) at a fixed address."""

    def __init__(self, domain, address, context, timeout):
        super().__init__(domain, 443, context=context, timeout=timeout)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch(url, timeout=10):
    """(status, headers, body) over plain HTTP; redirects not followed; None status on no answer."""
    request = urllib.request.Request(url)
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()
    except (urllib.error.URLError, OSError) as error:
        return None, {}, repr(error).encode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Deployment:
    """A generated project deployed by its runbook onto one real host."""

    def __init__(self, variant, workdir):
        self.variant = variant
        self.workdir = Path(workdir)
        self.timings = {}
        self.project = bake_variant(variant, self.workdir / "generated")
        self.answers = self.project.answers
        self.slug, self.domain = self.project.slug, self.project.domain
        self.unit = f"{self.slug}.service"
        self.host = None
        self.ca = None

    # Running things ----------------------------------------------------------------

    @contextlib.contextmanager
    def timed(self, what):
        """Record how long the block took, in seconds, under `what`."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[what] = round(time.monotonic() - started, 1)

    def units(self):
        units = [self.unit, "redis-server.service", "redis-server@channels.service"]
        if postgresql(self.answers):
            units.append("postgresql@15-main.service")
        units.append("nginx.service")
        return units

    def fail(self, what, *units):
        """Fail with what an operator would see: status and journal of the units."""
        report = self.host.unit_report(*(units or (self.unit,))) if self.host and self.host.leader else ""
        pytest.fail(f"[{self.variant}] {what}\n{report}", pytrace=False)

    def shell(self, script, timeout=120, check=True):
        """A root shell command in the host; on failure the units' status and journals."""
        result = self.host.sh(script, check=False, timeout=timeout)
        if check and result.returncode != 0:
            self.fail(
                f"`{script}` exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def manage_shell(self, code):
        """manage.py shell -c CODE as the service user, with the env file loaded: [its last line]."""
        output = self.shell(
            f"cd /srv/{self.slug} && set -a && . /etc/{self.slug}/env && set +a && "
            f"runuser -u {self.slug} -- .venv/bin/python manage.py shell -c {shlex.quote(code)}"
        ).stdout
        return output.strip().splitlines()[-1:]  # Django 5.2's shell first says what it imported

    def run_phase_in_host(self, phase, timeout=1200):
        script, _ = phase_script(self.project, phase, self.python_name)
        name = phase.replace(" ", "-")
        self.host.path(f"/root/runbook-{name}.sh").write_text(script)
        log = f"/root/runbook-{name}.log"
        result = self.host.sh(
            f"cd ~ && bash /root/runbook-{name}.sh > {log} 2>&1", check=False, timeout=timeout
        )
        output = self.host.path(log).read_text(errors="replace")
        if result.returncode != 0:
            tail = "\n".join(output.splitlines()[-120:])
            self.fail(
                f"the runbook's {phase} phase failed (exit {result.returncode}); last lines of the shell:\n"
                f"{tail}",
                *self.units(),
            )
        return output

    # Setting up --------------------------------------------------------------------

    def workstation(self):
        """The user's repository: the generated project committed, then the workstation block."""
        env = self.project.env(
            GIT_AUTHOR_NAME="Test", GIT_AUTHOR_EMAIL="test@example.com",
            GIT_COMMITTER_NAME="Test", GIT_COMMITTER_EMAIL="test@example.com",
        )  # fmt: skip
        self.git_env = env
        for command in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                        ["git", "commit", "-q", "-m", "Generated project"]):  # fmt: skip
            hosts.run(command, cwd=self.project.path, env=env)
        script, _ = phase_script(self.project, "workstation")
        result = subprocess.run(
            ["bash", "-c", script], cwd=self.project.path, env=env, capture_output=True, text=True,
            timeout=600, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            pytest.fail(
                f"[{self.variant}] the workstation block failed:\n{result.stdout[-3000:]}\n"
                f"{result.stderr[-3000:]}",
                pytrace=False,
            )
        tracked = hosts.run(["git", "ls-files", "uv.lock"], cwd=self.project.path).stdout
        assert tracked.strip() == "uv.lock", "after the workstation block, uv.lock is not committed"

    def commit(self, message, path, text):
        (self.project.path / path).write_text(text)
        hosts.run(["git", "add", path], cwd=self.project.path, env=self.git_env)
        hosts.run(["git", "commit", "-q", "-m", message], cwd=self.project.path, env=self.git_env)

    def install(self):
        with self.timed("workstation"):
            self.workstation()
        with self.timed("base image"):
            base = hosts.base_image()
            self.python_name, python_dir = hosts.prepared_python(self.answers["python_version"])
        with self.timed("copy root"):
            binds = [(str(self.project.path), f"{hosts.STAGING}/repository")]
            for inside, here in SPEED_BINDS.items():
                here.mkdir(parents=True, exist_ok=True)
                binds.append((str(here), inside))
            uv_cache = hosts.run(["uv", "cache", "dir"]).stdout.strip()
            binds.append((uv_cache, "/root/.cache/uv"))  # speed only: wheels download once
            self.host = hosts.Host.create(base, f"djust-{self.variant[:20]}", binds)
            staging = self.host.path(hosts.STAGING)
            (staging / "repository").mkdir(parents=True)
            (staging / "python").mkdir()
            hosts.run(["cp", "-a", str(python_dir), str(staging / "python" / self.python_name)], timeout=300)
            issued = certificate_authority(self.workdir / "ca", self.domain)
            fullchain, key = issued["ecdsa"]
            self.ca = {"ca.pem": issued["ca"], "chain.pem": issued["ca"], "fullchain.pem": fullchain,
                       "privkey.pem": key}  # fmt: skip
            (staging / "certificate").mkdir()
            for name, source in self.ca.items():
                (staging / "certificate" / name).write_bytes(source.read_bytes())
            # DNS stand-in: the domain resolves to this host.
            self.host.path("/etc/hosts").write_text(
                f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.0.1\t{self.domain}\n"
            )
        with self.timed("boot"):
            self.host.boot()
        with self.timed("runbook install"):
            self.install_log = self.run_phase_in_host("install")
        if load_balancer(self.answers):
            with self.timed("balancer stand-in"):
                self.balancer()
        return self

    def balancer(self):
        """An Nginx on the host in place of the load balancer (not part of the runbook)."""
        self.host.path("/etc/ssl/balancer").mkdir(parents=True)
        for name in ("fullchain.pem", "privkey.pem"):
            self.host.path(f"/etc/ssl/balancer/{name}").write_bytes(self.ca[name].read_bytes())
        self.shell("apt-get install -y -q nginx > /root/balancer-apt.log 2>&1", timeout=300)
        self.host.path("/etc/nginx/sites-enabled/default").unlink()
        self.host.path("/etc/nginx/sites-enabled/balancer-stand-in").write_text(BALANCER_STAND_IN.format())
        # restart, not reload: reload returns before the new workers take over.
        self.shell("nginx -t && systemctl restart nginx")

    def destroy(self):
        if self.host is not None:
            self.host.destroy()

    # Reaching the service ---------------------------------------------------------

    def https(self, path, timeout=10, method="GET"):
        """(status, headers, body) from https://DOMAIN at 127.0.0.1:443, certificate verified."""
        connection = _PinnedHTTPS(self.domain, "127.0.0.1", tls_context(self.ca["ca.pem"]), timeout)
        try:
            connection.request(method, path, headers={"Host": self.domain})
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        except OSError as error:
            return None, {}, repr(error).encode()
        finally:
            connection.close()

    def by_ip(self, path, timeout=10):
        """A load balancer's probe: plain HTTP to the app by IP."""
        return fetch(f"http://127.0.0.1:8000{path}", timeout)

    def session(self):
        """A LiveView session through the proxy: wss://DOMAIN/ws/live/ at 127.0.0.1, Origin of the site."""
        return LiveSession(
            f"wss://{self.domain}/ws/live/",
            f"https://{self.domain}",
            host="127.0.0.1",
            port=443,
            ssl=tls_context(self.ca["ca.pem"]),
        )

    def wait_serving(self, timeout=60):
        """Until /health/ is 200 through the proxy; False when it never is."""
        try:
            return wait_for(lambda: self.https("/health/", timeout=5)[0] == 200, timeout, "/health/", 0.5)
        except TimeoutError:
            return False


HOST_PARAMS = [pytest.param(REHEARSAL_VARIANTS[name], id=REHEARSAL_VARIANTS[name]) for name in HOST_VARIANTS]


@pytest.fixture(scope="module", params=HOST_PARAMS)
def deployed(request, tmp_path_factory):
    why = hosts.missing_requirements()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    deployment = Deployment(request.param, tmp_path_factory.mktemp(f"host-{request.param}"))
    started = time.monotonic()
    with hosts.host_lock():
        try:
            deployment.install()
            checks_started = time.monotonic()
            yield deployment
            deployment.timings["checks"] = round(time.monotonic() - checks_started, 1)
        finally:
            deployment.timings["total"] = round(time.monotonic() - started, 1)
            deployment.destroy()
            line = json.dumps({"variant": request.param, **deployment.timings})
            print(f"\nreal host timings (s): {line}")
            with (hosts.CACHE / "timings.jsonl").open("a") as log:
                log.write(line + "\n")


def arun(coroutine, timeout=120):
    """Run a coroutine in its own event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


# --- 1. The service the runbook started -----------------------------------------------------


def on_host(function):
    """The marks of every test that needs a booted host."""
    for mark in (pytest.mark.slow, pytest.mark.hosts, pytest.mark.xdist_group(HOST_GROUP)):
        function = mark(function)
    return function


@on_host
def test_unit_is_active_without_restarts(deployed):
    started = time.monotonic()
    state = deployed.host.show(deployed.unit, "ActiveState", "SubState", "NRestarts", "Result")
    if state["ActiveState"] != "active" or state["NRestarts"] != "0":
        deployed.fail(f"after the runbook the unit is {state}")
    deployed.timings["check: unit"] = round(time.monotonic() - started, 1)


@on_host
def test_health_over_https_and_by_ip(deployed):
    status, _, body = deployed.https("/health/")
    if status != 200:
        deployed.fail(
            f"https://{deployed.domain}/health/ answered {status}: {body[:300]!r}", *deployed.units()
        )
    assert json.loads(body)["status"] == "ok", body
    for path in ("/health/", "/health/live/"):
        status, _, body = deployed.by_ip(path)
        if status != 200:
            deployed.fail(f"the probe http://127.0.0.1:8000{path} answered {status}: {body[:300]!r}")
    # A page over HTTPS is served, not redirected: the app believes the proxy's
    # X-Forwarded-Proto (FORWARDED_ALLOW_IPS), or it would send browsers round in circles.
    status, headers, _ = deployed.https("/")
    assert status == 200, f"https://{deployed.domain}/ answered {status} {headers.get('Location', '')}"
    # HTTP on port 80 sends browsers to HTTPS (the site, or the balancer stand-in).
    status, _, _ = fetch("http://127.0.0.1/")
    assert status == 301, f"http://127.0.0.1/ answered {status}"


def session_answers(deployed, refs, what):
    """Mount a LiveView session through the proxy and click once per ref: the answers' types.

    Fails with the unit's state and journal when the session cannot be had.
    """

    async def scenario():
        session = await deployed.session().open()
        try:
            return [(await session.increment(ref))["type"] for ref in refs]
        finally:
            await session.close()

    try:
        return arun(scenario())
    except Exception as error:
        deployed.fail(f"{what} failed: {error!r}")


@on_host
def test_liveview_session_through_the_proxy_answers_events(deployed):
    answers = session_answers(
        deployed, (1, 2), f"a LiveView session through wss://{deployed.domain}/ws/live/"
    )
    assert answers == ["patch", "patch"], answers


@on_host
def test_channel_layer_lives_in_the_second_redis(deployed):
    """With a session open, its channel-layer groups are on port 6380 (noeviction), none on 6379."""
    redis_cli = (
        f"set -a && . /etc/{deployed.slug}/env && set +a && "
        "REDISCLI_AUTH=$REDIS_PASSWORD redis-cli --no-auth-warning -p {port} {command}"
    )

    def on_port(port, command):
        return deployed.shell(redis_cli.format(port=port, command=command)).stdout.split()

    async def scenario():
        session = await deployed.session().open()
        try:
            assert (await session.increment(1))["type"] == "patch"
            return await asyncio.to_thread(
                lambda: {port: on_port(port, "--scan --pattern 'asgi*'") for port in (6379, 6380)}
            )
        finally:
            await session.close()

    try:
        keys = arun(scenario())
    except Exception as error:
        deployed.fail(f"a LiveView session through the proxy failed: {error!r}", *deployed.units())
    policies = {port: on_port(port, "CONFIG GET maxmemory-policy")[-1] for port in (6379, 6380)}
    print(f"channel-layer keys by Redis port: {keys}; eviction policies: {policies}")
    assert policies == {6379: "volatile-lru", 6380: "noeviction"}, policies
    assert keys[6380], "with a session open, the channel layer wrote nothing to the Redis on port 6380"
    assert not keys[6379], (
        f"channel-layer keys in the evicting Redis on port 6379, where a full Redis drops them: {keys[6379]}"
    )


@on_host
def test_metrics_under_the_units_hardening(deployed):
    # The workers keep their figures in the unit's RuntimeDirectory, the one place
    # besides SQLite's that ProtectSystem=strict leaves writable; the scrape by IP
    # (as Prometheus does) adds them up, and the public site never shows them.
    session_answers(deployed, (1,), f"a LiveView session through wss://{deployed.domain}/ws/live/")
    files = deployed.shell(f"ls /run/{deployed.slug}/metrics").stdout.split()
    assert any(name.startswith("counter_") for name in files), files
    status, _, body = deployed.by_ip("/metrics")
    if status != 200:
        deployed.fail(f"http://127.0.0.1:8000/metrics answered {status}: {body[:300]!r}")
    assert re.search(rb'^liveview_events_total\{outcome="handled"\} [1-9]', body, re.MULTILINE), body[:2000]
    status, _, body = deployed.https("/metrics")
    assert status == 404, f"https://{deployed.domain}/metrics answered {status}"


@on_host
def test_every_journal_line_of_the_service_is_one_json_object(deployed):
    # The service's own output; `journalctl -u` would add systemd's lines about the unit.
    lines = deployed.shell(f"journalctl _SYSTEMD_UNIT={deployed.unit} -o cat --no-pager").stdout.splitlines()
    assert len(lines) > 3, lines
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            deployed.fail(f"journal line {number} of {deployed.unit} is not JSON: {line[:300]}")
        assert isinstance(record, dict) and {"level", "message"} <= set(record), line


# --- 2. Operating it ------------------------------------------------------------------------


class Poller(threading.Thread):
    """GET a URL (or call a probe) back to back until stopped (at most `limit` requests or `seconds`)."""

    def __init__(self, url, seconds=90, limit=20000):
        super().__init__(daemon=True)
        self.url, self.seconds, self.limit = url, seconds, limit
        self.answers = []
        self.stopping = threading.Event()

    def run(self):
        deadline = time.monotonic() + self.seconds
        for _ in range(self.limit):
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            probe = self.url if callable(self.url) else lambda: fetch(self.url, timeout=5)[0]
            self.answers.append(probe())
            time.sleep(0.01)

    def stop(self):
        self.stopping.set()
        self.join(15)
        return self.answers


@on_host
def test_deploying_a_new_version(deployed):
    """A new commit, then the runbook's deploy block: the new code answers."""
    token = f"deployed-{time.time_ns()}"
    urls = deployed.project.path / "config" / "urls.py"
    view = (
        "\n\ndef deployed(request):\n"
        f"    from django.http import HttpResponse\n\n    return HttpResponse({token!r})\n\n\n"
        'urlpatterns.append(path("deployed/", deployed))\n'
    )
    deployed.commit("A new version", "config/urls.py", urls.read_text() + view)
    gunicorn = deployed.answers["asgi_server"] == "gunicorn"
    poller = Poller("http://127.0.0.1:8000/health/live/") if gunicorn else None
    if poller:
        poller.start()
    started = time.monotonic()
    deployed.run_phase_in_host("new version")
    deployed.timings["check: new version"] = round(time.monotonic() - started, 1)
    if poller:
        answers = poller.stop()
        refused = [a for a in answers if a != 200]
        assert len(answers) > 10 and not refused, (
            f"during the reload {len(refused)} of {len(answers)} probes failed: {refused[:5]}"
        )

    def new_code_answers():
        status, _, body = deployed.https("/deployed/", timeout=5)
        return status == 200 and body.decode() == token

    try:
        wait_for(new_code_answers, 30, "the new version", 0.5)
    except TimeoutError:
        deployed.fail(f"after the deploy block /deployed/ answered {deployed.https('/deployed/')[:1]}")
    state = deployed.host.show(deployed.unit, "ActiveState", "NRestarts")
    assert state == {"ActiveState": "active", "NRestarts": "0"}, state


@on_host
def test_reload_keeps_answering(deployed):
    if deployed.answers["asgi_server"] != "gunicorn":
        pytest.skip("systemctl reload: Gunicorn only (Uvicorn's unit has no ExecReload)")
    # Through the site, as users and monitors see it. Probing Gunicorn directly, 1 of about
    # 600 connections during a reload was closed unanswered in 2 of 3 loaded runs (a
    # connection accepted by an old worker as it shut down); Nginx retries those
    # (proxy_next_upstream error), so users never see it.
    poller = Poller(lambda: deployed.https("/health/live/", timeout=5)[0])
    poller.start()
    time.sleep(1)
    deployed.shell(f"systemctl reload {deployed.unit}")
    time.sleep(8)  # new workers boot, old ones drain
    answers = poller.stop()
    refused = [a for a in answers if a != 200]
    if len(answers) < 50 or refused:
        deployed.fail(
            f"{len(refused)} of {len(answers)} probes during `systemctl reload` failed: {refused[:9]}"
        )


def with_open_sessions(deployed, command, count=3, wait=40):
    """Open `count` sessions, run a root command in the host; (how each session ended, the command)."""
    import websockets

    async def scenario():
        sessions = [await deployed.session().open() for _ in range(count)]
        running = asyncio.create_task(asyncio.to_thread(deployed.host.sh, command, check=False, timeout=90))
        ends = []
        for session in sessions:
            try:
                # Frames may come first (the demo pushes `online` and `total` to every
                # open page); the close follows. Bounded in frames and time.
                deadline = time.monotonic() + wait
                for _ in range(200):
                    await asyncio.wait_for(session.socket.recv(), max(0.1, deadline - time.monotonic()))
                ends.append("still open")
            except websockets.exceptions.ConnectionClosed as error:
                ends.append(error.rcvd.code if error.rcvd else "closed without a close frame")
            except TimeoutError:
                ends.append(f"still open after {wait} s")
            finally:
                session.socket.transport.abort()
        return ends, await running

    return arun(scenario(), timeout=200)


def reconnect_answers(deployed):
    """A new session mounts and answers an event (fails with the unit's state otherwise)."""
    answers = session_answers(deployed, (1,), "a new LiveView session")
    assert answers == ["patch"], answers


@on_host
def test_restart_closes_sessions_and_they_reconnect(deployed):
    ends, restart = with_open_sessions(deployed, f"systemctl restart {deployed.unit}")
    if restart.returncode != 0:
        deployed.fail(f"systemctl restart exited {restart.returncode}: {restart.stderr}")
    assert all(isinstance(end, int) for end in ends), f"sessions open at the restart: {ends}"
    if not deployed.wait_serving(60):
        deployed.fail("/health/ never came back after the restart")
    reconnect_answers(deployed)
    print(f"close codes at the restart: {ends}")


@on_host
def test_clearsessions_service_succeeds_and_its_timer_is_on(deployed):
    timer = f"{deployed.slug}-clearsessions.timer"
    service = f"{deployed.slug}-clearsessions.service"
    result = deployed.shell(f"systemctl start {service}", check=False, timeout=120)
    state = deployed.host.show(service, "Result", "ExecMainStatus")
    if result.returncode != 0 or state["Result"] != "success":
        deployed.fail(f"systemctl start {service}: exit {result.returncode}, {state}", service)
    enabled = deployed.shell(f"systemctl is-enabled {timer}", check=False).stdout.strip()
    active = deployed.shell(f"systemctl is-active {timer}", check=False).stdout.strip()
    assert (enabled, active) == ("enabled", "active"), f"{timer}: {enabled}, {active}"


@on_host
def test_stop_ends_within_the_timeout_with_success(deployed):
    limit = int(deployed.host.show(deployed.unit, "TimeoutStopUSec")["TimeoutStopUSec"].rstrip("s") or 0)
    started = time.monotonic()
    # Open sessions make the stop do real work: close each of them, then exit.
    ends, stop = with_open_sessions(deployed, f"systemctl stop {deployed.unit}", count=2)
    took = time.monotonic() - started
    state = deployed.host.show(deployed.unit, "ActiveState", "Result", "ExecMainStatus")
    if stop.returncode or state["ActiveState"] != "inactive" or state["Result"] != "success" or took >= limit:
        deployed.fail(f"systemctl stop took {took:.1f} s (TimeoutStopSec={limit}) and left {state}")
    assert all(isinstance(end, int) for end in ends), f"sessions open at the stop: {ends}"
    deployed.shell(f"systemctl start {deployed.unit}", timeout=90)
    if not deployed.wait_serving(60):
        deployed.fail("the service did not serve again after systemctl start")
    reconnect_answers(deployed)
    print(f"stopped in {took:.1f} s; close codes: {ends}")


@on_host
def test_power_off_and_boot_again(deployed):
    """The host comes back serving by itself, with what was written before still there."""
    status, _, _ = deployed.https("/")
    assert status == 200, status
    # A row in the database (sessions live in Redis, which keeps no data on disk:
    # docs/deployment.md, "Sessions"), written through the service's own settings.
    written = deployed.manage_shell(
        "from django.contrib.sessions.backends.db import SessionStore; "
        "store = SessionStore(); store['power'] = 'cycle'; store.create(); print(store.session_key)"
    )
    key = written[-1]
    row = (
        "from django.contrib.sessions.models import Session; "
        f"print(Session.objects.filter(pk={key!r}).exists())"
    )
    assert deployed.manage_shell(row) == ["True"], "the row written before the power-off is missing"
    with deployed.timed("power off"):
        deployed.host.poweroff()
    with deployed.timed("boot again"):
        deployed.host.boot()
        if not deployed.wait_serving(90):
            deployed.fail("after a power cycle the service is not serving", *deployed.units())
    state = deployed.host.show(deployed.unit, "ActiveState", "NRestarts")
    assert state == {"ActiveState": "active", "NRestarts": "0"}, state
    assert deployed.manage_shell(row) == ["True"], "the session row written before the power-off is gone"


@on_host
def test_missing_secret_fails_once_naming_it(deployed):
    env_file = f"/etc/{deployed.slug}/env"
    deployed.shell(f"cp {env_file} /root/env.saved && sed -i '/^DJANGO_SECRET_KEY=/d' {env_file}")
    before = deployed.host.show(deployed.unit, "NRestarts")["NRestarts"]
    started = time.monotonic()
    deployed.shell(f"systemctl restart {deployed.unit}", check=False, timeout=60)

    def failed():
        return deployed.host.show(deployed.unit, "ActiveState")["ActiveState"] == "failed"

    try:
        wait_for(failed, 30, "the unit to fail", 0.5)
    except TimeoutError:
        deployed.fail("without DJANGO_SECRET_KEY the unit is not `failed` 30 s after the restart")
    took = time.monotonic() - started
    time.sleep(5)  # longer than RestartSec: a restart loop would show by now
    state = deployed.host.show(deployed.unit, "ActiveState", "NRestarts", "ExecMainStatus", "Result")
    if state["ActiveState"] != "failed" or state["NRestarts"] != before:
        deployed.fail(f"without DJANGO_SECRET_KEY the unit went on: {state} (NRestarts was {before})")
    journal = deployed.shell(f"journalctl _SYSTEMD_UNIT={deployed.unit} -o cat -n 30 --no-pager").stdout
    naming = [line for line in journal.splitlines() if "DJANGO_SECRET_KEY" in line]
    if not naming:
        deployed.fail("no journal line names DJANGO_SECRET_KEY")
    print(f"failed after {took:.1f} s: {state}; {naming[-1]}")
    # Put the secret back: the same unit starts again.
    deployed.shell(f"cp /root/env.saved {env_file} && systemctl reset-failed {deployed.unit}")
    deployed.shell(f"systemctl start {deployed.unit}", timeout=90)
    if not deployed.wait_serving(60):
        deployed.fail("with the secret back the service did not serve again")
