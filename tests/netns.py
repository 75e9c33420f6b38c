"""Linux network namespaces for the cluster tests: hosts on private networks, on one machine.

A namespace is a host's network stack: its own interfaces, addresses, routes and
ports. Commands run inside one with `ip netns exec NAME ...` (exec_prefix);
Python code of the test process runs inside one in a thread of its own
(run_in), since the network namespace is a per-thread property on Linux and
every socket keeps the namespace of the thread that created it.

Everything made here is named with the caller's prefix and removed by name.
Addresses come from 198.18.0.0/15 (RFC 2544, reserved for test networks) and no
namespace gets a default route: the traffic can never leave the machine.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*args, netns=None, check=True):
    """Run `ip ARGS` (inside netns when given); raise with ip's words on failure."""
    command = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
    return result


def exec_prefix(netns):
    """The argv prefix that runs a command inside netns (nothing for the test machine's own)."""
    return ["ip", "netns", "exec", netns] if netns else []


def enter(netns):
    """Move the calling thread into netns (only this thread)."""
    with open(NETNS_DIR / netns) as handle:
        if _libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")


def run_in(netns, function, *args, timeout=600):
    """function(*args) in a new thread inside netns; its result, or its exception re-raised."""
    if not netns:
        return function(*args)
    box = {}

    def target():
        try:
            enter(netns)
            box["result"] = function(*args)
        except BaseException as error:  # handed to the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True, name=f"in-{netns}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"code inside {netns} still running after {timeout} s")
    if "error" in box:
        raise box["error"]
    return box.get("result")


def namespaces(prefix):
    """Names of the namespaces that start with prefix."""
    if not NETNS_DIR.exists():
        return []
    return sorted(path.name for path in NETNS_DIR.iterdir() if path.name.startswith(prefix))


def _inode(path):
    try:
        return os.stat(path).st_ino
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return None


def pids_in(netns):
    """Every process whose network namespace is netns: all the processes of that host."""
    target = _inode(NETNS_DIR / netns)
    if target is None:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _inode(entry / "ns" / "net") == target:
            found.append(int(entry.name))
    return found


def kill_all(netns, sig=signal.SIGKILL):
    """Send sig to every process of the host; the pids signalled."""
    pids = pids_in(netns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    return pids


def remove(prefix):
    """Kill what still runs in, then delete, every namespace named prefix*; links go with them.

    Links are deleted by name first (each veth end lives in a namespace of
    ours, so deleting it removes its peer too), then the namespaces.
    """
    for netns in namespaces(prefix):
        kill_all(netns)
        for line in ip("-o", "link", "show", netns=netns, check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name != "lo":
                ip("link", "delete", name, netns=netns, check=False)
        ip("netns", "delete", netns, check=False)
    left = namespaces(prefix)
    if left:
        raise RuntimeError(f"network namespaces left behind: {', '.join(left)}")
