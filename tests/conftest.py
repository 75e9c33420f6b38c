"""Shared fixtures: bake each variant once per session and run its own tools in it."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

from tests.variants import VARIANTS, answers

TEMPLATE_DIR = Path(__file__).resolve().parent.parent

# pyenv keeps every Python this machine can test; elsewhere, PATH may have them.
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"


def find_python(version):
    """Path of an interpreter for "3.12", or the version itself for uv to resolve."""
    for candidate in sorted(PYENV_VERSIONS.glob(f"{version}.*"), reverse=True):
        binary = candidate / "bin" / f"python{version}"
        if binary.exists():
            return str(binary)
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-V"], capture_output=True, check=False).returncode == 0:
        return found
    # Let uv find one it manages (`uv python install 3.12`), as on GitHub's runners.
    return version


@dataclass
class Project:
    """A generated project on disk, with helpers to run its own commands."""

    variant: str
    path: Path
    answers: dict

    @property
    def slug(self):
        return self.path.name

    @property
    def domain(self):
        """The domain_name answer, as the generated .env.example carries it."""
        for line in (self.path / ".env.example").read_text().splitlines():
            if line.startswith("DJANGO_ALLOWED_HOSTS="):
                return line.partition("=")[2].strip()
        raise LookupError("DJANGO_ALLOWED_HOSTS missing from .env.example")

    def env(self, **extra):
        python = find_python(self.answers["python_version"])
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "VIRTUAL_ENV", "UV_PROJECT", "PYTEST_"))
        }
        env.update(
            UV_PYTHON=python,
            UV_PYTHON_DOWNLOADS="never",
            UV_NO_PROGRESS="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.update(extra)
        return env

    def run(self, *command, env=None, timeout=600, check=True):
        """Run a command inside the project's uv environment; fail with its output."""
        result = subprocess.run(
            ["uv", "run", "--frozen", *command] if self.locked else ["uv", "run", *command],
            cwd=self.path,
            env=self.env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"[{self.variant}] `{' '.join(command)}` exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}",
                pytrace=False,
            )
        return result

    @property
    def locked(self):
        return (self.path / "uv.lock").exists()

    def sync(self):
        """Create the project's .venv with its dependencies (once)."""
        if not (self.path / ".venv").exists():
            subprocess.run(
                ["uv", "sync", "--quiet"],
                cwd=self.path,
                env=self.env(),
                check=True,
                timeout=900,
            )
        return self

    def dotenv(self):
        """The values the post-generation hook wrote to .env."""
        values = {}
        for line in (self.path / ".env").read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
        return values


def bake_variant(variant, output_dir):
    """Generate one variant with cookiecutter's API, as `cookiecutter --no-input` would."""
    context = answers(variant)
    path = cookiecutter(
        str(TEMPLATE_DIR),
        no_input=True,
        extra_context=context,
        output_dir=str(output_dir),
    )
    return Project(variant=variant, path=Path(path), answers=context)


@pytest.fixture(scope="session")
def bake(tmp_path_factory):
    """bake("default") -> Project; each variant is generated once per test process."""
    baked = {}

    def _bake(variant):
        if variant not in VARIANTS:
            raise KeyError(f"unknown variant {variant!r}; see tests/variants.py")
        if variant not in baked:
            baked[variant] = bake_variant(variant, tmp_path_factory.mktemp(variant))
        return baked[variant]

    return _bake


@pytest.fixture(scope="session")
def synced(bake):
    """synced("default") -> Project whose .venv has its dependencies installed."""
    return lambda variant: bake(variant).sync()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real, password-protected Redis on a free loopback port, for this test process."""
    from tests.stack import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A real PostgreSQL of the test module's own, stopped after its last test."""
    from tests.stack import Postgres

    server = Postgres(tmp_path_factory.mktemp("postgres")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium for the tests of one module (tests/stack.py launch_chromium)."""
    from playwright.sync_api import sync_playwright

    from tests.stack import launch_chromium

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the figures a test printed (tests/cluster_load.py) to its report."""
    outcome = yield
    from tests.cluster_load import FIGURES

    if call.when == "call" and FIGURES:
        outcome.get_result().user_properties.append(("figures", "\n".join(FIGURES)))
        FIGURES.clear()


def pytest_terminal_summary(terminalreporter):
    """The measured figures of every test that printed some, after the run."""
    blocks = [
        value
        for kind in ("passed", "failed")
        for report in terminalreporter.stats.get(kind, [])
        for name, value in getattr(report, "user_properties", [])
        if name == "figures"
    ]
    if blocks:
        terminalreporter.section("measured figures")
        for block in blocks:
            terminalreporter.write_line(block)
