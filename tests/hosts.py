"""Debian 12 hosts with systemd as PID 1, booted with systemd-nspawn, for the runbook tests.

A minimal bookworm root is built once with debootstrap and cached under CACHE,
keyed by what goes into it; each host is a copy of it, booted with
`systemd-nspawn --boot`, driven with `nsenter` into its systemd's namespaces,
and powered off by SIGTERM to the nspawn process this module started.

The hosts share the test machine's network (nspawn's default): the runbook's
apt-get and uv must reach Debian's and PyPI's registries. So a host's Redis,
PostgreSQL, Nginx and app listen on this machine's own ports, and only one host
may run at a time: HostLock serialises them across test processes, and
busy_ports() names what is in the way before a boot.

Also here: reading a runbook's fenced ```sh blocks under their headings.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("DJUST_PROD_HOSTS_CACHE", "/var/tmp/djust-prod-hosts"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What debootstrap puts in the root besides the minimal base ("required" packages).
# systemd, its sysv links and D-Bus make a bootable host. Two more that every
# Debian cloud image has (priority "important" or pulled in by it): ca-certificates
# (pip reaches PyPI over TLS; the certbot stand-in adds its CA) and procps, whose
# /bin/kill the Gunicorn unit's ExecReload runs. Everything else the runbook installs.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates", "procps")
# A cloud image's sources: the release, its updates and security fixes.
SOURCES = (
    f"deb {MIRROR} {SUITE} main\n"
    f"deb {MIRROR} {SUITE}-updates main\n"
    f"deb http://deb.debian.org/debian-security {SUITE}-security main\n"
)
# Ports a host's services take on this machine (the network is shared).
HOST_PORTS = {
    80: "Nginx (HTTP)",
    443: "Nginx (HTTPS)",
    5432: "PostgreSQL",
    6379: "Redis",
    6380: "Redis for the channel layer",
    8000: "the app",
}
# Inside a host: where the test stages what its stand-ins use (repository, certificate, Python).
STAGING = "/var/lib/djust-prod-test"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Certificate authorities this machine adds to its trust store, e.g. an egress proxy
# that inspects TLS. A host on the same network needs them to reach PyPI; the
# hosts get them, and their shells SSL_CERT_FILE (uv and pip bring their own
# roots otherwise). None on a plain machine such as GitHub's runners.
NETWORK_CAS = tuple(sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")))


def missing_requirements():
    """Why real hosts cannot run here, or None."""
    if os.geteuid() != 0:
        return "real hosts need root (systemd-nspawn, nsenter)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "patchelf"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (./scripts/test installs it)"
    return None


def run(command, timeout=600, check=True, **kwargs):
    """subprocess.run with text output captured; raises with the output on failure."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(map(str, command))}` exited {result.returncode}\n{result.stdout[-4000:]}"
            f"{result.stderr[-4000:]}"
        )
    return result


@contextlib.contextmanager
def file_lock(path, timeout, what):
    """Hold an exclusive flock on path; wait at most timeout seconds for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout) + 1):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what}: {path} still locked after {timeout} s") from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def host_lock(timeout=1800):
    """One real host at a time on this machine, whichever test process boots it."""
    return file_lock(CACHE / "host.lock", timeout, "another real host is running")


def busy_ports():
    """The host ports something on this machine already listens on, as 'port (what)'."""
    busy = []
    for port, what in HOST_PORTS.items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                busy.append(f"{port} ({what})")
    return busy


# --- The base image -------------------------------------------------------------------


def base_image():
    """A debootstrapped bookworm root, built once and reused while its recipe is unchanged."""
    recipe = json.dumps([SUITE, MIRROR, BASE_PACKAGES, SOURCES, 2])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    root = CACHE / f"base-{SUITE}-{key}"
    with file_lock(CACHE / "base.lock", 900, "building the base image"):
        if (root / "etc" / "os-release").exists():
            return root
        partial = Path(tempfile.mkdtemp(prefix="base-partial-", dir=CACHE))
        try:
            run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                 SUITE, str(partial), MIRROR],
                timeout=900,
            )  # fmt: skip
            (partial / "etc" / "apt" / "sources.list").write_text(SOURCES)
            (partial / "etc" / "hostname").write_text("djust-host\n")
            # Empty: systemd makes one at first boot, as on a fresh cloud image.
            (partial / "etc" / "machine-id").write_text("")
            # Keep downloaded .debs (the archive directory is shared between hosts).
            (partial / "etc" / "apt" / "apt.conf.d" / "99keep-debs").write_text(
                'Binary::apt::APT::Keep-Downloaded-Packages "true";\n'
            )
            run(["rm", "-rf", str(partial / "var" / "cache" / "apt" / "archives")])
            # mkdtemp made it 0700: the host's "/" must let its system users through.
            partial.chmod(0o755)
            partial.rename(root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return root


def prepared_python(version):
    """A relocatable CPython X.Y for a host, as `uv python install X.Y` would leave it.

    (name, directory): uv's own build when this machine's uv manages one (as on
    GitHub's runners), else pyenv's build with its RUNPATH made relative
    ($ORIGIN/../lib), since uv cannot download interpreters here. Prepared once
    per version under CACHE (tests and idle tools removed: 300 MB less to copy).
    """
    found = run(["uv", "python", "find", "--managed-python", version], check=False, timeout=60)
    if found.returncode == 0 and found.stdout.strip():
        binary = Path(found.stdout.strip())
        source, patch = binary.resolve().parent.parent, False
    else:
        pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
        candidates = sorted(pyenv.glob(f"{version}.*"), reverse=True)
        if not candidates:
            raise RuntimeError(f"no Python {version} here to give the host (uv-managed or pyenv)")
        source, patch = candidates[0], True
    binary = source / "bin" / f"python{version}"
    full = run([str(binary), "-c", "import platform; print(platform.python_version())"]).stdout.strip()
    name = f"cpython-{full}-linux-x86_64-gnu"
    target = CACHE / "python" / name
    with file_lock(CACHE / "python.lock", 300, "preparing a Python"):
        if not (target / "bin" / f"python{version}").exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix="partial-", dir=target.parent))
            run(["cp", "-a", f"{source}/.", str(partial)])
            stdlib = partial / "lib" / f"python{version}"
            for unneeded in ("test", "idlelib", "tkinter", "turtledemo"):
                shutil.rmtree(stdlib / unneeded, ignore_errors=True)
            if patch:
                run(["patchelf", "--set-rpath", "$ORIGIN/../lib", str(partial / "bin" / f"python{version}")])
            partial.chmod(0o755)
            partial.rename(target)
    return name, target


# --- Hosts ---------------------------------------------------------------------------


def _children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


class Host:
    """One booted copy of the base root. Commands run inside through nsenter."""

    def __init__(self, root, name, binds=()):
        self.root = Path(root)
        self.name = name
        self.binds = list(binds)  # (path here, path in the host)
        self.process = None
        self.leader = None
        self.console = self.root.parent / f"{self.root.name}.console.log"
        self.boots = 0
        self.needs_trust_update = False

    @classmethod
    def create(cls, base, name, binds=()):
        hosts = CACHE / "hosts"
        hosts.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=hosts))
        run(["cp", "-a", f"{base}/.", str(root)], timeout=300)  # "/." copies the base's mode 0755 too
        for authority in NETWORK_CAS:
            shutil.copy(authority, root / "usr/local/share/ca-certificates" / authority.name)
        host = cls(root, name, binds)
        host.needs_trust_update = bool(NETWORK_CAS)
        return host

    def path(self, inside):
        """This machine's path of a file inside the host (its root is a directory here)."""
        return self.root / str(inside).lstrip("/")

    def boot(self, timeout=90):
        """Start systemd in the root and wait until it reports the system running."""
        busy = busy_ports()
        if busy:
            raise RuntimeError(
                "cannot boot a real host: these ports are in use on this machine, and the host "
                f"shares its network: {', '.join(busy)}. Stop whatever listens there."
            )
        flags = []
        # On a machine without systemd as PID 1 (a container, this test machine),
        # nspawn can neither register the machine nor create a scope unit.
        if not Path("/run/systemd/system").exists():
            flags += ["--keep-unit"]
        flags += ["--register=no"]
        for here, inside in self.binds:
            flags.append(f"--bind={here}:{inside}")
        log = self.console.open("ab")
        self.process = subprocess.Popen(
            ["systemd-nspawn", *flags, "-D", str(self.root), f"--machine={self.name}", "--boot", "-q"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.boots += 1
        deadline = time.monotonic() + timeout
        self.leader = None
        for _ in range(int(timeout * 5)):
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.process.returncode}\n{self.console_tail()}")
            self.leader = self._find_init()
            if self.leader or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not self.leader:
            raise RuntimeError(f"no systemd inside the host after {timeout} s\n{self.console_tail()}")
        state = ""
        for _ in range(int(timeout * 2)):
            state = self.sh("systemctl is-system-running", check=False, timeout=10).stdout.strip()
            if state in ("running", "degraded") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if state != "running":
            failed = self.sh("systemctl --failed --no-pager", check=False, timeout=10).stdout
            raise RuntimeError(
                f"host state {state!r} after boot, not 'running'\n{failed}\n{self.console_tail()}"
            )
        if self.needs_trust_update:
            self.exec("update-ca-certificates")
            self.needs_trust_update = False
        return self

    def _find_init(self):
        """The container's systemd: a child (or grandchild) of the nspawn process."""
        frontier = [self.process.pid]
        for _ in range(3):
            frontier = [child for pid in frontier for child in _children(pid)]
            for pid in frontier:
                if _comm(pid) == "systemd":
                    return pid
        return None

    def console_tail(self, lines=30):
        try:
            text = self.console.read_text(errors="replace")
        except FileNotFoundError:
            return "(no console output)"
        return "--- host console ---\n" + "\n".join(text.splitlines()[-lines:])

    def exec(self, *command, input=None, timeout=120, check=True, env=None):
        """Run a command inside the host as root, with a login shell's clean environment."""
        if not self.leader:
            raise RuntimeError("the host is not running")
        environment = {"PATH": PATH, "HOME": "/root", "USER": "root", "LOGNAME": "root",
                       "SHELL": "/bin/bash", "LANG": "C.UTF-8", "TERM": "dumb", **(env or {})}  # fmt: skip
        if NETWORK_CAS:
            environment.setdefault("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--", "env", "-i",
             *(f"{k}={v}" for k, v in environment.items()), *command],
            input=input, capture_output=True, text=True, timeout=timeout, check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise RuntimeError(
                f"in the host: `{' '.join(command)}` exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
            )
        return result

    def sh(self, script, **kwargs):
        return self.exec("bash", "-c", script, **kwargs)

    def show(self, unit, *properties):
        """systemctl show UNIT -p ...: {property: value}."""
        out = self.exec("systemctl", "show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    def unit_report(self, *units, lines=50):
        """What an operator would look at: systemctl status and the journal tail of each unit."""
        parts = []
        for unit in units:
            for command in (
                f"systemctl status {unit} --no-pager -l",
                f"journalctl -u {unit} -n {lines} --no-pager",
            ):
                result = self.sh(command, check=False, timeout=30)
                parts.append(f"--- # {command}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)

    def poweroff(self, timeout=60):
        """SIGTERM to nspawn (the host powers off); SIGKILL after timeout. Seconds it took."""
        if self.process is None or self.process.poll() is not None:
            return 0.0
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # The container's init ends its whole PID namespace when killed.
            for pid in filter(None, (self.leader, self.process.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            raise RuntimeError(
                f"the host did not power off within {timeout} s\n{self.console_tail()}"
            ) from None
        finally:
            self.leader = None
        return time.monotonic() - started

    def destroy(self):
        """Power off if running, then remove the root (never through a mount still in place)."""
        try:
            self.poweroff()
        finally:
            mounts = Path("/proc/mounts").read_text()
            if f" {self.root}/" in mounts or f" {self.root} " in mounts:
                raise RuntimeError(f"something is still mounted under {self.root}; not removing it")
            shutil.rmtree(self.root, ignore_errors=True)
            self.console.unlink(missing_ok=True)


# --- Runbooks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced ```sh block of a runbook file, under its nearest heading."""

    file: str
    heading: str  # the nearest ## or ### heading, without "N. " numbering
    number: int  # 1-based, within the file
    text: str


HEADING = re.compile(r"^(#{1,6})\s+(?:\d+\.\s+)?(.*?)\s*$")


def sh_blocks(project_dir, relative):
    """Every ```sh block of one file, in order."""
    blocks, heading, fence, lines = [], "", None, []
    for line in (Path(project_dir) / relative).read_text().splitlines():
        if fence is None:
            match = HEADING.match(line)
            if match:
                heading = match.group(2)
            elif line.startswith("```"):
                fence, lines = line[3:].strip(), []
        elif line.startswith("```"):
            if fence == "sh":
                blocks.append(Block(relative, heading, len(blocks) + 1, "\n".join(lines)))
            fence = None
        else:
            lines.append(line)
    return blocks


def logical_lines(text):
    """Lines with backslash continuations joined, as the shell reads them."""
    joined, pending = [], ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        joined.append(pending + (line.lstrip() if pending else line))
        pending = ""
    if pending:
        joined.append(pending.rstrip())
    return joined
