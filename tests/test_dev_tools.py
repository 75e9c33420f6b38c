"""The developer's tools in every variant: `make dev` / `make test` and the pre-commit hooks.

The Makefile's recipes must be the README's first two commands, as `make -n` prints
them, so the two cannot drift; `make test` must pass. The pre-commit hooks must run
offline (local hooks only, tools from the project's dev group) and pass on the
project as generated, in a git repository as a developer's clone would be.
"""

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import Project
from tests.variants import VARIANTS

VARIANT_PARAMS = [pytest.param(v, id=v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS]


def readme_commands(project):
    """The README's first two ```sh blocks: the run command and the test command."""
    readme = (project.path / "README.md").read_text()
    run, test = re.findall(r"```sh\n(.*?)```", readme, re.S)[:2]
    return {"dev": run.strip(), "test": test.strip()}


def make_prints(path, target):
    """What `make <target>` would run, without running it."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=path,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def working_copy(project, destination):
    """A copy of the project (its .venv shared) to init git in and let hooks rewrite."""
    shutil.copytree(project.path, destination, ignore=shutil.ignore_patterns(".venv"))
    copy = Project(variant=project.variant, path=destination, answers=project.answers)
    env = {"UV_PROJECT_ENVIRONMENT": str(project.path / ".venv")}
    return copy, env


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_make_targets_are_the_readme_commands(bake, variant):
    project = bake(variant)
    for target, command in readme_commands(project).items():
        assert make_prints(project.path, target) == command, f"make {target} differs from the README"


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_make_test_passes(synced, variant, tmp_path):
    project, env = working_copy(synced(variant), tmp_path / "project")
    result = project.run("make", "test", env={**env, "PYTEST_ADDOPTS": "-p no:cacheprovider"})
    assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]


def test_pre_commit_hooks_are_local_and_offline(bake):
    """No hook repository to clone: every hook runs a tool uv already installed."""
    config = yaml.safe_load((bake("default").path / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    hooks = config["repos"][0]["hooks"]
    assert {hook["language"] for hook in hooks} == {"system"}
    assert all(hook["entry"].startswith("uv run ") for hook in hooks)
    ids = {hook["id"] for hook in hooks}
    assert {"ruff-check", "ruff-format", "trailing-whitespace", "end-of-file-fixer"} <= ids
    assert {"check-added-large-files", "check-merge-conflict", "check-yaml", "check-toml"} <= ids


def git(path, *args):
    subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, text=True)


def git_repository(project, env):
    git(project.path, "init", "-q")
    git(project.path, "add", "-A")
    project.run("pre-commit", "install", env=env)


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_pre_commit_hooks_pass_on_the_generated_project(synced, variant, tmp_path):
    project, env = working_copy(synced(variant), tmp_path / "project")
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    git_repository(project, env)
    result = project.run("pre-commit", "run", "--all-files", "--show-diff-on-failure", env=env)
    for hook in ("ruff check", "trailing whitespace", "YAML parses", "TOML parses"):
        assert re.search(rf"^{re.escape(hook)}\.+Passed$", result.stdout, re.M), result.stdout


def test_pre_commit_hooks_catch_what_they_are_for(synced, tmp_path):
    """The same hooks fail on a lint error, trailing whitespace and broken YAML."""
    project, env = working_copy(synced("default"), tmp_path / "project")
    env["PRE_COMMIT_HOME"] = str(tmp_path / "pre-commit-home")
    (project.path / "core" / "views.py").write_text(
        (project.path / "core" / "views.py").read_text() + "import os\n"
    )
    (project.path / "README.md").write_text((project.path / "README.md").read_text() + "trailing \n")
    (project.path / "compose.yaml").write_text("services: [\n")
    git_repository(project, env)
    result = project.run("pre-commit", "run", "--all-files", env=env, check=False)
    assert result.returncode != 0
    for hook in ("ruff check", "trailing whitespace", "YAML parses"):
        assert re.search(rf"^{re.escape(hook)}\.+Failed$", result.stdout, re.M), result.stdout
