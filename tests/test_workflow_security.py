"""GitHub workflows and Dependabot configurations, held to what a workflow security linter checks.

Every workflow file is checked, the template's own and each variant's generated
ones, whatever their names: a workflow added later is covered the day it lands.
zizmor (offline audits, its default "regular" persona) must report nothing, and
the rules zizmor leaves to policy are checked here too: each action pinned to a
full commit SHA with its release in a comment, the same pin for the same action
everywhere, no token left in .git/config, and an explicit least-privilege
`permissions:` for the workflow and each job. The pins and how to move them:
.github/dependabot.yml and each generated project's own.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TEMPLATE_DIR
from tests.variants import VARIANTS

VARIANT_PARAMS = [pytest.param(v, id=v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS]
BIN = Path(sys.executable).parent
ZIZMOR_CONFIG = Path(__file__).with_name("zizmor.yml")
# `uses: owner/repo[/path]@<40 hex> # vX.Y.Z`, nothing else on the line.
PINNED = re.compile(
    r"^\s*(?:-\s+)?uses:\s+(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})"
    r" # (?P<version>v\d+\.\d+\.\d+)\s*$"
)
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)")
# Jobs that need a write scope, with the reason: (workflow file name, job id) -> reason.
WRITE_SCOPES_ALLOWED = {
    ("template-update.yml", "update"): "pushes the template update's branch and opens its pull request",
}


def workflow_files(root):
    folder = Path(root) / ".github" / "workflows"
    return sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])


def zizmor(*inputs):
    return subprocess.run(
        [str(BIN / "zizmor"), "--offline", "--no-progress", "--color=never", f"--config={ZIZMOR_CONFIG}",
         *map(str, inputs)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def pins(path):
    """{action: (sha, version)} for each `uses:` line of a workflow."""
    found = {}
    for line in path.read_text().splitlines():
        match = PINNED.match(line)
        if match:
            found.setdefault(match["action"], set()).add((match["sha"], match["version"]))
    return found


def policy_problems(path):
    """What breaks the pinning, token and permission rules in one workflow file (empty: none)."""
    problems = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        uses = USES.match(line)
        if uses and not uses["ref"].startswith("./") and not PINNED.match(line):
            problems.append(f"{path.name}:{number}: not pinned as `uses: owner/repo@<full SHA> # vX.Y.Z`")
    workflow = yaml.safe_load(path.read_text())
    if workflow.get("permissions") != {}:
        top = workflow.get("permissions")
        problems.append(f"{path.name}: top-level `permissions: {{}}` expected, not {top!r}")
    for job_id, job in workflow.get("jobs", {}).items():
        scopes = job.get("permissions")
        if not isinstance(scopes, dict):
            problems.append(f"{path.name}: job {job_id} declares no permissions mapping ({scopes!r})")
            scopes = {}
        for scope, access in scopes.items():
            if access not in ("read", "none") and (path.name, job_id) not in WRITE_SCOPES_ALLOWED:
                problems.append(f"{path.name}: job {job_id} asks for {scope}: {access}")
        for step in job.get("steps", []):
            checkout = str(step.get("uses", "")).startswith("actions/checkout@")
            if checkout and (step.get("with") or {}).get("persist-credentials") is not False:
                problems.append(f"{path.name}: job {job_id}: checkout without persist-credentials: false")
    return problems


# --- The template's own workflows ----------------------------------------------------------


def test_template_workflows_pass_zizmor():
    assert workflow_files(TEMPLATE_DIR), "no workflow found"
    result = zizmor(TEMPLATE_DIR / ".github")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_template_workflows_follow_the_pinning_and_permission_rules():
    problems = [problem for path in workflow_files(TEMPLATE_DIR) for problem in policy_problems(path)]
    assert not problems, "\n".join(problems)


# --- Each variant's generated workflows --------------------------------------------------


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_generated_workflows_pass_zizmor(bake, variant):
    project = bake(variant)
    assert workflow_files(project.path), "no workflow generated"
    result = zizmor(project.path / ".github")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_generated_workflows_follow_the_pinning_and_permission_rules(bake, variant):
    project = bake(variant)
    problems = [problem for path in workflow_files(project.path) for problem in policy_problems(path)]
    assert not problems, "\n".join(problems)


def test_an_action_has_the_same_pin_in_every_workflow(bake):
    """Dependabot moves the template's pins; the generated workflows must follow in the same commit."""
    seen = {}
    for path in [*workflow_files(TEMPLATE_DIR), *workflow_files(bake("default").path)]:
        for action, refs in pins(path).items():
            seen.setdefault(action, {}).update({ref: path.name for ref in refs})
    differing = {action: refs for action, refs in seen.items() if len(refs) > 1}
    assert not differing, f"one action, several pins: {differing}"
    assert {"actions/checkout", "astral-sh/setup-uv"} <= set(seen)


# --- Dependabot --------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["template", "generated"])
def test_dependabot_updates_actions_and_locked_python_dependencies(bake, where):
    root = TEMPLATE_DIR if where == "template" else bake("default").path
    path = root / ".github" / "dependabot.yml"
    # The schema GitHub's own docs follow, as SchemaStore publishes it (vendored in check-jsonschema).
    result = subprocess.run(
        [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    assert config["version"] == 2
    updates = {update["package-ecosystem"]: update for update in config["updates"]}
    # uv.lock is read by Dependabot's "uv" ecosystem ("pip" would not update it).
    assert set(updates) == {"github-actions", "uv"}
    for update in updates.values():
        assert update["directory"] == "/"
        assert update["schedule"]["interval"] in ("daily", "weekly")
        assert update["cooldown"]["default-days"] >= 1
    assert zizmor(path).returncode == 0


# --- The checks above can fail -------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    ["unpinned action", "token kept", "write scope", "no job permissions"],
)
def test_workflow_checks_would_catch_a_regression(bake, tmp_path, change):
    """Guard: each weakening of the generated CI fails zizmor or the policy check, or both."""
    original = (bake("default").path / ".github" / "workflows" / "ci.yml").read_text()
    pin = re.search(r"actions/checkout@[0-9a-f]{40} # v[\d.]+", original).group(0)
    weakened = {
        "unpinned action": original.replace(pin, "actions/checkout@v5", 1),
        "token kept": original.replace("persist-credentials: false\n", "fetch-depth: 1\n", 1),
        "write scope": original.replace("      contents: read\n", "      contents: write\n", 1),
        "no job permissions": original.replace("    permissions:\n      contents: read\n", "", 1),
    }[change]
    assert weakened != original
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(weakened)
    problems = policy_problems(workflows / "ci.yml")
    assert problems, f"the policy check missed: {change}"
    if change in ("unpinned action", "token kept"):
        result = zizmor(tmp_path / ".github")
        assert result.returncode != 0, f"zizmor missed: {change}\n{result.stdout}"
