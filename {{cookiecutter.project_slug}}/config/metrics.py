"""The directory where the workers keep their Prometheus figures (multi-process mode).

Each worker is a process of its own, and a scrape reaches only one of them. So
prometheus-client writes every worker's counters, gauges and histograms to
files in PROMETHEUS_MULTIPROC_DIR (one set per pid, memory-mapped), and the
worker that answers /metrics adds all of them up (core/metrics.py).

The directory must be empty when the server starts: files of an earlier run
would be added to the new one's figures, and pids get reused. bin/serve
prepares it before any worker exists. Where it lives:
- systemd: /run/<service>/metrics, in the unit's RuntimeDirectory (writable
  under ProtectSystem=strict, memory-backed, removed when the service stops),
  which systemd names in RUNTIME_DIRECTORY;
- Docker: /run/app/metrics, on the tmpfs compose.yaml mounts;
- elsewhere: a directory of this user's in the system's temporary directory.
https://prometheus.github.io/client_python/multiprocess/
"""

import os
import stat
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import env_str


def directory(port):
    """PROMETHEUS_MULTIPROC_DIR, else metrics/ in systemd's RuntimeDirectory, else one in /tmp."""
    runtime = env_str("RUNTIME_DIRECTORY")
    if runtime:
        # systemd lists several directories with ':' when a unit asks for several.
        default = Path(runtime.split(":")[0]) / "metrics"
    else:
        default = Path(tempfile.gettempdir()) / f"prometheus-{os.getuid()}-{port}"
    return Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(default)))


def prepare(path):
    """Create the directory (mode 0700) or empty it, and export its path to the workers.

    Refuses a directory that another user owns or that is a symbolic link: in a
    shared /tmp someone else could have made it first and feed /metrics figures
    of their own, or point it elsewhere.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as error:
        raise ImproperlyConfigured(
            f"PROMETHEUS_MULTIPROC_DIR={str(path)!r} cannot be created: {error.strerror}"
        ) from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ImproperlyConfigured(
            f"PROMETHEUS_MULTIPROC_DIR={str(path)!r} is not a directory of this user's"
        )
    for stale in path.glob("*.db"):
        stale.unlink()
    # Read by prometheus-client when the workers import it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def worker_exited(pid):
    """Drop the live gauges (sessions open) of a worker that is gone."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)
