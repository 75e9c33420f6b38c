"""Template releases, and the update path from a previous release to this commit.

CHANGELOG.md lists each release with its version, date and template commit. The
slow test generates a service with cruft at an earlier release, commits it,
makes the edits a team typically makes, commits them, and updates the service to
the commit under test exactly as the generated README says, after the steps the
CHANGELOG asks for by hand. It then checks what a team would check: nothing
left unmerged, every edit kept, every template change arrived, secrets untouched
and unprinted, and the service's own tests and linters green with its lock
upgraded and at the lowest versions its dependency bounds allow.

The template is a fresh clone of HEAD: what is tested is the commit, not the
working tree. The clone needs the full history (CI fetches it).
"""

import json
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cookiecutter.main import cookiecutter

from tests.conftest import TEMPLATE_DIR, find_python
from tests.variants import answers

# Two variants that differ in database, ASGI server, Python and Sentry.
UPDATE_VARIANTS = ["default", "py3.13-sqlite-gunicorn-nosentry"]

# The checkout may belong to another user (CI containers); these reads are safe.
GIT = ["git", "-c", "safe.directory=*"]

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Team",
    "GIT_AUTHOR_EMAIL": "team@example.org",
    "GIT_COMMITTER_NAME": "Team",
    "GIT_COMMITTER_EMAIL": "team@example.org",
}


# --- The CHANGELOG ---------------------------------------------------------------

RELEASE_HEADING = re.compile(r"^## \[(?P<version>\d+\.\d+\.\d+)\] - (?P<date>\d{4}-\d{2}-\d{2})$", re.M)
COMMIT_LINE = re.compile(r"^Commit: (?P<commit>[0-9a-f]{40}|pending)$", re.M)
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Release:
    version: str
    date: str
    commit: str | None  # None: the release being cut, which is this commit
    text: str

    @property
    def version_tuple(self):
        return tuple(int(part) for part in self.version.split("."))

    def before_update_steps(self):
        """The sh blocks under "#### Before `cruft update`", in order."""
        match = re.search(r"^#### Before `cruft update`\n(.*?)(?=^##)", self.text + "\n##", re.M | re.S)
        return SH_BLOCK.findall(match.group(1)) if match else []


def read_changelog(text):
    """Releases in CHANGELOG order (newest first); refuses an entry without a valid commit line."""
    headings = list(RELEASE_HEADING.finditer(text))
    releases = []
    for heading, following in zip(headings, [*headings[1:], None], strict=True):
        body = text[heading.end() : following.start() if following else len(text)]
        commits = COMMIT_LINE.findall(body)
        if len(commits) != 1:
            raise ValueError(f"release {heading['version']}: want one 'Commit: <40 hex>|pending' line")
        commit = None if commits[0] == "pending" else commits[0]
        releases.append(Release(heading["version"], heading["date"], commit, body))
    return releases


def git(cwd, *args, check=True):
    return subprocess.run(
        [*GIT, *args],
        cwd=cwd,
        env={**os.environ, **GIT_IDENTITY},
        capture_output=True,
        text=True,
        check=check,
    )


def git_head():
    return git(TEMPLATE_DIR, "rev-parse", "HEAD").stdout.strip()


def clone_template(path, commit):
    """A clone of this repository whose checked-out branch is at commit: what cruft uses as the template."""
    git(path.parent, "clone", "-q", str(TEMPLATE_DIR), str(path))
    git(path, "checkout", "-q", "-B", "under-test", commit)
    return path


RELEASES = read_changelog((TEMPLATE_DIR / "CHANGELOG.md").read_text())


def starting_points(releases, head):
    """The releases the test updates from: the newest one before this commit, and the first."""
    published = [release for release in releases if release.commit not in (None, head)]
    chosen = {release.version: release for release in (published[:1] + published[-1:])}
    return sorted(chosen.values(), key=lambda release: release.version_tuple)


# --- Fast checks: the CHANGELOG and the generated project's update settings -----------


def test_changelog_parser_reads_and_refuses():
    text = (
        "# Changelog\n\n## [1.1.0] - 2026-12-01\n\nCommit: pending\n\n#### Before `cruft update`\n\n"
        "```sh\necho one\n```\n\n#### After `cruft update`\n\n```sh\necho not-before\n```\n\n"
        f"## [1.0.0] - 2026-11-24\n\nCommit: {'a' * 40}\n"
    )
    newest, older = read_changelog(text)
    assert (newest.version, newest.date, newest.commit) == ("1.1.0", "2026-12-01", None)
    assert newest.before_update_steps() == ["echo one\n"]
    assert (older.commit, older.before_update_steps()) == ("a" * 40, [])
    assert starting_points([newest, older], head="b" * 40) == [older]
    with pytest.raises(ValueError, match=r"release 1\.0\.0"):
        read_changelog(text.replace(f"Commit: {'a' * 40}", "Commit: abc1234"))


def test_changelog_releases_are_ordered_and_reachable():
    assert RELEASES, "CHANGELOG.md lists no release"
    versions = [release.version_tuple for release in RELEASES]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    dates = [release.date for release in RELEASES]
    assert dates == sorted(dates, reverse=True)
    assert all(release.commit for release in RELEASES[1:]), "only the newest release may be pending"
    for release in RELEASES:
        if release.commit:
            ancestor = git(TEMPLATE_DIR, "merge-base", "--is-ancestor", release.commit, "HEAD", check=False)
            assert ancestor.returncode == 0, (
                f"{release.version}'s commit {release.commit} is not in this clone's history of HEAD"
                " (a shallow clone? `git fetch --unshallow`)"
            )
    assert starting_points(RELEASES, git_head()), "no earlier release to update from"


@pytest.mark.xdist_group("default")
def test_generated_project_records_its_release_and_skips_env(bake):
    project = bake("default")
    config = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
    assert config["_template_version"] == RELEASES[0].version, "cookiecutter.json and CHANGELOG.md disagree"
    pyproject = tomllib.loads((project.path / "pyproject.toml").read_text())
    assert pyproject["tool"]["djust-prod"]["template-version"] == RELEASES[0].version
    assert ".env" in pyproject["tool"]["cruft"]["skip"]


def update_workflow(project):
    return yaml.safe_load((project.path / ".github" / "workflows" / "template-update.yml").read_text())


@pytest.mark.xdist_group("default")
def test_update_workflow_is_scheduled_with_least_privilege(bake):
    workflow = update_workflow(bake("default"))
    assert workflow[True]["schedule"], "no schedule"  # YAML 1.1 reads the key `on` as True
    assert workflow["permissions"] == {}
    jobs = workflow["jobs"]
    assert jobs["check"]["permissions"] == {"contents": "read"}
    assert jobs["update"]["permissions"] == {"contents": "write", "pull-requests": "write"}
    steps = [step.get("run", "") for step in jobs["update"]["steps"]]
    update, guard, pull_request = (
        next(i for i, run in enumerate(steps) if word in run)
        for word in ("update --skip-apply-ask", ".rej", "gh pr create")
    )
    assert update < guard < pull_request
    assert workflow["env"]["CRUFT"].startswith("cruft@")
    assert 'uvx "$CRUFT" check' in jobs["check"]["steps"][-1]["run"]


@pytest.mark.xdist_group("default")
@pytest.mark.parametrize(
    ("leftover", "fails"),
    [
        (None, False),
        (("core/views.py.rej", "@@ -1 +1 @@\n"), True),
        ((".github/workflows/ci.yml.rej", "@@ -1 +1 @@\n"), True),
        (("core/views.py", "<<<<<<< ours\nx = 1\n=======\nx = 2\n>>>>>>> theirs\n"), True),
        (("docs/new.md", "Heading\n=======\n"), False),
    ],
    ids=["clean", "reject", "hidden-reject", "conflict-markers", "setext-heading"],
)
def test_update_workflow_refuses_what_did_not_merge(bake, tmp_path, leftover, fails):
    """The workflow's guard step, run on a service with each kind of leftover."""
    project = bake("default")
    guard = next(
        step for step in update_workflow(project)["jobs"]["update"]["steps"] if ".rej" in step.get("run", "")
    )
    service = tmp_path / "service"
    shutil.copytree(project.path, service, ignore=shutil.ignore_patterns(".venv"))
    git(service, "init", "-q")
    git(service, "add", "-A")
    git(service, "commit", "-qm", "generated")
    if leftover:
        path, text = leftover
        (service / path).parent.mkdir(parents=True, exist_ok=True)
        (service / path).write_text(text)
    result = subprocess.run(["bash", "-e", "-c", guard["run"]], cwd=service, capture_output=True, text=True)
    assert (result.returncode != 0) == fails, result.stdout + result.stderr
    if fails:
        assert f"::error file=./{path}" in result.stdout or f"::error file={path}" in result.stdout


def test_a_plain_cookiecutter_project_links_at_its_release(tmp_path):
    """The generated README's `cruft link --checkout` path, with the release's commit for its tag."""
    release = RELEASES[0]
    template = clone_template(tmp_path / "template", release.commit or git_head())
    context = answers("default")
    path = Path(cookiecutter(str(template), no_input=True, extra_context=context, output_dir=str(tmp_path)))
    recorded = tomllib.loads((path / "pyproject.toml").read_text())["tool"]["djust-prod"]["template-version"]
    assert recorded == release.version
    link = ["cruft", "link", "--no-input", "--checkout", release.commit or git_head()]
    link += ["--extra-context", json.dumps(context), str(template)]
    result = subprocess.run(link, cwd=path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    shown = subprocess.run(
        ["cruft", "diff", "--exit-code"], cwd=path, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, (
        f"linked at {release.version}, the project still differs:\n{shown.stdout[-4000:]}"
    )


# --- The update itself -------------------------------------------------------------


class Service:
    """A service generated with cruft, run with the variant's Python and no downloads."""

    def __init__(self, path, variant):
        self.path = path
        self.variant = variant
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "VIRTUAL_ENV", "UV_PROJECT", "UV_RESOLUTION", "PYTEST_"))
        }
        self.env.update(
            GIT_IDENTITY,
            UV_PYTHON=find_python(answers(variant)["python_version"]),
            UV_PYTHON_DOWNLOADS="never",
            UV_NO_PROGRESS="1",
            PYTHONDONTWRITEBYTECODE="1",
        )

    def sh(self, script, timeout=900, expect_success=True, **env):
        result = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=self.path,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert (result.returncode == 0) == expect_success, (
            f"[{self.variant}] exited {result.returncode}:\n{script}\n"
            f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
        )
        return result


def cruft_create(template, output_dir, variant, checkout=None):
    """`cruft create --no-input` with the variant's answers; the service's path."""
    output_dir.mkdir()
    command = ["cruft", "create", "--no-input", "--output-dir", str(output_dir)]
    command += ["--extra-context", json.dumps(answers(variant))]
    if checkout:
        command += ["--checkout", checkout]
    result = subprocess.run([*command, str(template)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (path,) = output_dir.iterdir()
    return path


ABOUT_VIEW = '''

def about(request):
    """A plain page of the team's own."""
    return HttpResponse(f"{intcomma(1234567)} clicks served.")
'''
ABOUT_TEST = """from django.conf import settings


def test_about_page(client):
    assert client.get("/about/").content == b"1,234,567 clicks served."


def test_time_zone_is_ours():
    assert settings.TIME_ZONE == "Europe/Berlin"
"""
README_PARAGRAPH = "\nOn call: the payments team (#payments-oncall). Deploys happen on weekdays only.\n"


def apply_team_edits(service, lock):
    """The fixed set of typical edits: a view and its route, a setting, a README paragraph, a dependency."""
    root = service.path

    def replace(name, old, new):
        path = root / name
        text = path.read_text()
        assert text.count(old) == 1, f"{name}: anchor {old!r} not found once"
        path.write_text(text.replace(old, new))

    replace(
        "core/views.py",
        "from djust import LiveView\n",
        "from django.http import HttpResponse\nfrom djust import LiveView\n",
    )
    replace(
        "core/views.py",
        "from djust.decorators import event_handler\n",
        "from djust.decorators import event_handler\nfrom humanize import intcomma\n",
    )
    (root / "core/views.py").write_text((root / "core/views.py").read_text() + ABOUT_VIEW)
    replace(
        "config/urls.py",
        "from core.views import CounterView\n",
        "from core.views import CounterView, about\n",
    )
    replace(
        "config/urls.py",
        '    path("", CounterView.as_view(), name="counter"),\n',
        '    path("", CounterView.as_view(), name="counter"),\n    path("about/", about, name="about"),\n',
    )
    replace("config/settings/base.py", 'TIME_ZONE = "UTC"\n', 'TIME_ZONE = "Europe/Berlin"\n')
    (root / "tests" / "test_about.py").write_text(ABOUT_TEST)
    description = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())["description"]
    replace("README.md", f"{description}\n", f"{description}\n{README_PARAGRAPH}")
    # As a team adds one: `uv add` edits pyproject.toml and, unless frozen, writes uv.lock.
    service.sh(f"uv add {'--no-sync' if lock else '--frozen'} 'humanize>=4.9,<5'")


# What each team edit leaves behind, to find after the update.
TEAM_EDITS = {
    "core/views.py": "def about(request):",
    "config/urls.py": 'path("about/", about, name="about")',
    "config/settings/base.py": 'TIME_ZONE = "Europe/Berlin"',
    "tests/test_about.py": "def test_about_page(client):",
    "README.md": README_PARAGRAPH,
    "pyproject.toml": '"humanize>=4.9,<5"',
}


def project_files(root):
    """Every file of a service that git would track (ignored ones, such as .env and .venv, left out)."""
    if (root / ".git").exists():
        listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
        return {name for name in listed.split("\0") if name and (root / name).is_file()}
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file() and path.name != ".env"}


def walk(root):
    """Every file under root, hidden ones included, except .git and .venv."""
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [name for name in subdirs if name not in (".git", ".venv")]
        for name in files:
            yield Path(directory) / name


CONFLICT_MARKER = re.compile(r"^(<<<<<<<|>>>>>>>)( |$)", re.M)
SECRET_NAMES = ("DJANGO_SECRET_KEY", "REDIS_PASSWORD", "POSTGRES_PASSWORD")


def update_cases():
    head = git_head()
    return [
        pytest.param(
            variant,
            start,
            id=f"{variant}-from-{start.version}",
            marks=[pytest.mark.slow, pytest.mark.xdist_group("update")],
        )
        for start in starting_points(RELEASES, head)
        for variant in UPDATE_VARIANTS
    ]


@pytest.mark.parametrize(("variant", "start"), update_cases())
def test_update_from_a_previous_release(tmp_path, variant, start):
    head = git_head()
    template = clone_template(tmp_path / "template", head)

    # Generated at the earlier release and committed, as a team starts.
    service = Service(cruft_create(template, tmp_path / "generated", variant, checkout=start.commit), variant)
    git(service.path, "init", "-q")
    git(service.path, "add", "-A")
    git(service.path, "commit", "-qm", f"Generated from djust-prod {start.version}")
    apply_team_edits(service, lock=True)
    git(service.path, "add", "-A")
    git(service.path, "commit", "-qm", "Our about page, time zone, on-call note and humanize")
    env_before = (service.path / ".env").read_bytes()
    secrets = [value for name, value in dotenv(service.path).items() if name in SECRET_NAMES]
    assert secrets

    # What a fresh service looks like at this commit, with the same answers and edits.
    fresh = Service(cruft_create(template, tmp_path / "fresh", variant), variant)
    apply_team_edits(fresh, lock=False)

    # The CHANGELOG's steps by hand, then the generated README's update commands.
    for release in reversed(RELEASES):
        if release.version_tuple > start.version_tuple:
            for step in release.before_update_steps():
                service.sh(step)
    readme = (fresh.path / "README.md").read_text()
    section = readme[readme.index("## Updating from the template") :]
    (check_command,) = (
        block for block in SH_BLOCK.findall(section) if re.fullmatch(r"[^\n]*cruft\S* check\n", block)
    )
    (update_commands,) = (block for block in SH_BLOCK.findall(section) if " update " in block)
    assert "out of date" in service.sh(check_command, expect_success=False).stdout
    service.sh(update_commands)

    rejects = [str(path) for path in walk(service.path) if path.name.endswith(".rej")]
    assert not rejects, f"cruft left rejected hunks: {rejects}"
    marked = [str(path) for path in walk(service.path) if CONFLICT_MARKER.search(read_text(path))]
    assert not marked, f"conflict markers in {marked}"
    assert (service.path / ".env").read_bytes() == env_before, ".env changed"

    # Every file is the fresh render's (with the team's edits on it): template changes arrived,
    # edits were kept, nothing extra or missing. The lock and cruft's own record differ by design.
    files, expected = project_files(service.path), project_files(fresh.path)
    assert files - {"uv.lock"} == expected, "files differ from a fresh render"
    for name in sorted(expected - {".cruft.json"}):
        ours, theirs = service.path / name, fresh.path / name
        assert ours.read_bytes() == theirs.read_bytes(), f"{name} differs from a fresh render:\n" + diff(
            theirs, ours
        )
        assert os.access(ours, os.X_OK) == os.access(theirs, os.X_OK), f"{name}: executable bit"
    for name, edit in TEAM_EDITS.items():
        assert edit in (service.path / name).read_text(), f"{name}: the team's edit is gone"
    ours, theirs = (json.loads((root / ".cruft.json").read_text()) for root in (service.path, fresh.path))
    assert ours["commit"] == theirs["commit"] == head
    assert ours["context"] == theirs["context"]

    assert "up to date" in service.sh(check_command).stdout
    shown = subprocess.run(["cruft", "diff"], cwd=service.path, capture_output=True, text=True, check=False)
    assert "On call: the payments team" in shown.stdout, "cruft diff does not show the team's edits"
    assert not [secret for secret in secrets if secret in shown.stdout + shown.stderr], (
        "cruft diff prints a secret"
    )

    # The README's commands ran the tests with the lock upgraded; now at the lowest versions allowed.
    service.sh(
        "uv run pytest && uv run ruff check . && uv run ruff format --check .",
        UV_RESOLUTION="lowest-direct",
    )
    assert 'resolution-mode = "lowest-direct"' in (service.path / "uv.lock").read_text()


def dotenv(root):
    values = {}
    for line in (root / ".env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def read_text(path):
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return ""


def diff(old, new):
    return subprocess.run(
        ["git", "diff", "--no-index", "--", str(old), str(new)], capture_output=True, text=True, check=False
    ).stdout[-4000:]
