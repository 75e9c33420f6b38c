"""The servers under test, each behind its Nginx: this template (as generated, and with its
handler as a plain `def`), the `djust new` project, the bare WebSocket echo, the bare Django view.

Every server is exec'd under the pass's pinning (taskset -c 1), every Nginx under taskset -c 0.
"""

import os
import shutil
import subprocess
from pathlib import Path

from bench.fronts import BenchNginx, GeneratedSite, Target
from bench.procs import Server
from tests import stack

REPO = Path(__file__).resolve().parent.parent
BASELINES = REPO / "bench" / "baselines"

LABELS = {
    "ours": "this template (bin/serve, Redis)",
    "ours_def": "this template, handler as a plain `def`",
    "djust_new": "`djust new` project (1 process, memory state, in-memory layer)",
    "echo": "bare uvicorn WebSocket echo",
    "bare_django": "bare Django view on uvicorn",
}

# The generated demo's handler, and the same handler as a plain `def` (bench edits a copy).
ASYNC_HANDLER = (
    "    async def increment(self, **kwargs):\n        self.count += 1\n        await self.count_click()\n"
)
DEF_HANDLER = (
    "    def increment(self, **kwargs):\n        self.count += 1\n        async_to_sync(self.count_click)()\n"
)


def baseline_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "VIRTUAL_ENV"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def def_handler_copy(project, directory):
    """A copy of the generated project whose CounterView.increment is a plain `def` (same .venv)."""
    from tests.conftest import Project

    directory = Path(directory)
    if not directory.exists():
        shutil.copytree(
            project.path, directory, symlinks=True, ignore=shutil.ignore_patterns(".venv", "staticfiles")
        )
        (directory / ".venv").symlink_to(project.path / ".venv")
        (directory / "staticfiles").symlink_to(project.path / "staticfiles")
        views = directory / "core" / "views.py"
        text = views.read_text()
        if ASYNC_HANDLER not in text:
            raise SystemExit(
                "bench: core/views.py no longer has the `async def increment` bench edits into a `def`; "
                "update bench/targets.py ASYNC_HANDLER"
            )
        text = text.replace(ASYNC_HANDLER, DEF_HANDLER)
        text = text.replace(
            "from djust import LiveView\n",
            "from asgiref.sync import async_to_sync\nfrom djust import LiveView\n",
        )
        views.write_text(text)
    return Project(variant=project.variant, path=directory, answers=project.answers)


class Targets:
    """Builds and starts targets for one pass of the benchmark."""

    def __init__(self, bench, pinning):
        self.bench, self.pinning = bench, pinning
        self.workdir = bench.workdir

    def app_server(self, project, workers, log_name):
        return stack.AppServer(
            project,
            self.bench.app_env,
            workers=workers,
            log_path=self.workdir / log_name,
            prefix=self.pinning.server(),
        )

    def start_ours(self, name="ours"):
        bench = self.bench
        project = (
            bench.project if name == "ours" else def_handler_copy(bench.project, self.workdir / "ours_def")
        )
        app = self.app_server(project, bench.workers, f"serve-{name}.log")
        bench.started(app.start())
        nginx = GeneratedSite(self.workdir / f"nginx-{name}", app.port, project, self.pinning)
        if not nginx.exists():
            nginx = BenchNginx(self.workdir / f"nginx-{name}", app.port, self.pinning)
        bench.started(nginx.start())
        label = f"{LABELS[name]}, {bench.workers} worker{'s' if bench.workers > 1 else ''}"
        return Target(
            name,
            label,
            app,
            nginx,
            "core.views.CounterView",
            origin=f"https://{bench.domain}",
            host=bench.domain,
        )

    def uvicorn(self, name, module, cwd, env, workers=None):
        port = stack.free_port()
        argv = [self.bench.python, "-m", "uvicorn", module, "--port", str(port), "--log-level", "warning"]
        if workers:
            argv += ["--workers", str(workers), "--no-access-log"]
        return Server(
            name,
            argv,
            cwd=cwd,
            env=env,
            port=port,
            log_path=self.workdir / f"{name}.log",
            prefix=self.pinning.server(),
        )

    def baseline_server(self, name):
        """A baseline's server (not started) and the view its sessions mount."""
        bench = self.bench
        if name == "echo":
            env = baseline_env(ECHO_MOUNT_HTML_BYTES=str(bench.mount_html_bytes))
            return self.uvicorn("echo", "bench.baselines.echo_app:app", REPO, env, bench.workers), "echo"
        if name == "bare_django":
            server = self.uvicorn(
                "bare_django", "bench.baselines.bare_django:application", REPO, baseline_env(), bench.workers
            )
            return server, None
        directory = self.workdir / "djust_new"
        env = baseline_env(ALLOWED_HOSTS=f"{bench.domain},localhost,127.0.0.1")
        if not directory.exists():
            shutil.copytree(BASELINES / "djust_new", directory)
            subprocess.run(
                [bench.python, "manage.py", "migrate", "--noinput", "-v0"],
                cwd=directory,
                env=env,
                check=True,
                timeout=300,
                capture_output=True,
            )
        # The scaffold's `make dev` minus --reload: uvicorn, one process.
        return self.uvicorn("djust_new", "demo.asgi:application", directory, env), "demo.views.CounterView"

    def start_baseline(self, name):
        bench = self.bench
        server, view = self.baseline_server(name)
        bench.started(server.start())
        nginx = bench.started(BenchNginx(self.workdir / f"nginx-{name}", server.port, self.pinning).start())
        label = LABELS[name]
        if name in ("echo", "bare_django"):
            label += f", {bench.workers} worker{'s' if bench.workers > 1 else ''}"
        return Target(name, label, server, nginx, view, origin=f"https://{bench.domain}", host=bench.domain)

    def start(self, name):
        return self.start_ours(name) if name in ("ours", "ours_def") else self.start_baseline(name)
