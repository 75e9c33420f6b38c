"""The generated project every benchmark measures, installed as production installs it.

bench.run, bench.page and bench.importtime all start the same way: the default
variant generated (or --project), its venv synced from its own lock and
byte-compiled, Redis and PostgreSQL started, migrate and collectstatic run.
"""

import subprocess
from pathlib import Path

from bench.procs import log
from tests import stack


def generated(project_path, workdir):
    """The default project at project_path, or a new one generated under workdir; its venv synced."""
    from tests.conftest import Project, bake_variant
    from tests.variants import answers

    if project_path:
        path = Path(project_path).resolve()
        project = Project(variant="default", path=path, answers=answers("default"))
        log(f"using the generated project at {path}")
    else:
        log("generating the default project")
        project = bake_variant("default", Path(workdir) / "generated")
    log("uv sync (the project's own lock and venv)")
    project.sync()
    return project


def compile_bytecode(project):
    """Byte-compile the venv's packages, as the Dockerfile (UV_COMPILE_BYTECODE) and the runbook do.

    Without it every worker compiles each module it imports at every start
    (the tests' venvs are synced with PYTHONDONTWRITEBYTECODE), which about
    doubles a start and says nothing about a production one. The project's own
    few modules are left as production leaves them.
    """
    python = project.path / ".venv" / "bin" / "python"
    site = next((project.path / ".venv" / "lib").glob("python3*/site-packages"))
    command = [str(python), "-m", "compileall", "-q", "-j0", str(site)]
    subprocess.run(command, capture_output=True, timeout=600, check=False)


def dependencies(project, workdir, started, pin=None):
    """Start Redis (and PostgreSQL for that answer): (env, domain, redis, pg).

    env is the production environment that reaches them; pg is None for
    SQLite. `started` registers each server for the caller's clean-up;
    `pin(pid)`, when given, moves it to the server's core.
    """
    dotenv = project.dotenv()
    domain = dotenv.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")[0].strip()
    (Path(workdir) / "redis").mkdir(exist_ok=True)
    redis = started(stack.RedisServer(Path(workdir) / "redis").start())
    if pin:
        pin(redis.pid)
    env = {**dotenv, "REDIS_URL": redis.url, "DJANGO_ALLOWED_HOSTS": f"{domain},localhost,127.0.0.1"}
    pg = None
    if project.answers.get("database") == "postgresql":
        pg = started(stack.Postgres(Path(workdir) / "pg").start())
        env["DATABASE_URL"] = pg.url
        if pin:
            pin(postgres_pid(pg))
    return env, domain, redis, pg


def postgres_pid(pg):
    """PostgreSQL's postmaster pid (its workers are its children), or None."""
    try:
        return int((pg.data / "postmaster.pid").read_text().split()[0])
    except (AttributeError, FileNotFoundError, ValueError, IndexError):
        return None


def migrated(project, env):
    """migrate + collectstatic with the production settings."""
    log("migrate + collectstatic")
    stack.AppServer(project, env).prepare()
