"""The template's own Python (hooks, tests, benchmark) meets the bar it sets for generated projects."""

import subprocess
import sys
from pathlib import Path

import pytest

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
# The generated project's sources are Jinja until baked; test_bake lints them after.
OWN_CODE = ["hooks", "tests", "bench"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check", "--diff"]], ids=["check", "format"])
def test_ruff_is_clean_on_the_template_tooling(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *OWN_CODE],
        cwd=TEMPLATE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
