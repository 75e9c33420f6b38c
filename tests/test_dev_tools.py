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
