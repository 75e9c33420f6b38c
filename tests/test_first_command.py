"""The template README's first command, typed by a new user on a fresh Debian 12 host.

The README promises that its first block works as written on a fresh Debian or
Ubuntu machine, whose system Python refuses `pip install`, and that from a clone
of the template its path replaces the URL. This test boots a Debian 12 host under
systemd (tests/hosts.py), logs in as an ordinary user with sudo, as on a fresh
cloud image, and types the block: apt, pipx, uv, cruft, migrate, runserver. The
dev server must then serve the counter and answer LiveView events; afterwards
`make dev` starts it again and `make test` (the generated README's second
command) passes on that host.

Stand-ins, each for something this machine cannot do:
- the template is a local clone (`git clone` of this repository) instead of
  GitHub: the README's own clone form (`./djust-prod`) replaces the URL;
- `uv` cannot download a Python here, so the Python the project asks for is
  copied to where `uv python install` would put it (tests/hosts.py);
- the user account with passwordless sudo, which a cloud image brings, is made
  by root first (with the `sudo` package, which debootstrap leaves out).

Marked `hosts` and `slow`: it uses this machine's port 8000, one host at a time.
"""

import asyncio
import json
import os
import re
import shlex
import time

import pytest

from tests import hosts
from tests.conftest import TEMPLATE_DIR
from tests.stack import LiveSession, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.hosts, pytest.mark.xdist_group("real-hosts")]

TEMPLATE_URL = "https://github.com/org/djust-prod"
CLONE_FORM = "./djust-prod"  # the README: "From a clone of this repository, give cruft its path"
USER = "dev"
HOME = f"/home/{USER}"
SLUG = "my_djust_service"  # the default answers' slug
DEV_URL = "http://127.0.0.1:8000"


def first_block():
    """The template README's first ```sh block, as logical lines."""
    block = hosts.sh_blocks(TEMPLATE_DIR, "README.md")[0]
    return [line for line in hosts.logical_lines(block.text) if line.strip()]


def test_first_block_is_what_this_test_types():
    """Fast tier: the block still has the shape the host test relies on."""
    lines = first_block()
    assert len(lines) == 2, lines
    assert lines[0].startswith("sudo apt-get "), lines[0]
    assert lines[1].count(TEMPLATE_URL) == 1, f"the published URL, once, in: {lines[1]}"
    assert lines[1].endswith("uv run manage.py runserver"), lines[1]
    readme = (TEMPLATE_DIR / "README.md").read_text()
    assert f"uvx cruft@2.16.0 create --no-input {CLONE_FORM}" in readme, "the clone form is not shown"


def user_script():
    """The block as the user types it from a clone: the README's clone path for the URL."""
    first, second = first_block()
    return (
        "\n".join(["set -euxo pipefail", f"cd {HOME}", first, second.replace(TEMPLATE_URL, CLONE_FORM)])
        + "\n"
    )


def background(command, name, directory="~"):
    """Run command in directory, detached from this shell: output in ~/NAME.log, exit
    status in ~/NAME.rc. (Everything inside one setsid: a `cd ... && setsid ... &` list
    would run in a background subshell holding this shell's output open.)"""
    inner = f"cd {directory} && {command} > ~/{name}.log 2>&1; echo $? > ~/{name}.rc"
    return f"setsid bash -c {shlex.quote(inner)} < /dev/null > /dev/null 2>&1 &"


class FreshHost:
    """A booted Debian 12 host with a sudo user and the template cloned in its home."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.host = None
        self.timings = {}

    def as_user(self, script, **kwargs):
        """A login shell of the user, as each new ssh session or terminal is: Debian's
        ~/.profile puts ~/.local/bin (pipx's uv) on PATH once it exists."""
        environment = {"HOME": HOME, "USER": USER, "LOGNAME": USER}
        return self.host.exec(
            "runuser", "-u", USER, "--", "bash", "-l", "-c", script, env=environment, **kwargs
        )

    def prepare(self):
        started = time.monotonic()
        base = hosts.base_image()
        version = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())["python_version"][
            0
        ]  # the default
        python_name, python_dir = hosts.prepared_python(version)
        archives = hosts.CACHE / "apt-archives"  # speed only: .debs download once per machine
        archives.mkdir(parents=True, exist_ok=True)
        self.host = hosts.Host.create(base, "djust-first", [(str(archives), "/var/cache/apt/archives")])
        self.timings["prepare"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        self.host.boot()
        self.timings["boot"] = round(time.monotonic() - started, 1)
        # STAND-IN: a cloud image's first user, with passwordless sudo.
        self.host.sh(
            "apt-get install -y -q sudo > /root/sudo-apt.log 2>&1"
            f" && useradd --create-home --shell /bin/bash {USER}"
            f" && echo '{USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/{USER}"
            f" && chmod 0440 /etc/sudoers.d/{USER}",
            timeout=300,
        )
        # STAND-IN: `git clone` of the template from GitHub (committed HEAD, as cruft reads it).
        hosts.run(
            [
                "git",
                "clone",
                "-q",
                "--no-hardlinks",
                str(TEMPLATE_DIR),
                str(self.host.path(f"{HOME}/djust-prod")),
            ]
        )
        # STAND-IN: `uv python install`, which cannot download here.
        managed = self.host.path(f"{HOME}/.local/share/uv/python")
        managed.mkdir(parents=True)
        hosts.run(["cp", "-a", str(python_dir), str(managed / python_name)], timeout=300)
        self.host.exec("chown", "-R", f"{USER}:{USER}", HOME)
        script = self.host.path(f"{HOME}/first-command.sh")
        script.write_text(user_script())
        return self

    def start_first_command(self):
        """The user's shell runs the block in the background (it ends in runserver)."""
        self.as_user(background("bash ~/first-command.sh", "first-command"))

    def log_tail(self, name="first-command.log", lines=60):
        path = self.host.path(f"{HOME}/{name}")
        text = path.read_text(errors="replace") if path.exists() else "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def exit_status(self, name="first-command.rc"):
        path = self.host.path(f"{HOME}/{name}")
        return path.read_text().strip() if path.exists() else None

    def destroy(self):
        if self.host is not None:
            self.host.destroy()


def page_status():
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{DEV_URL}/", timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except OSError:
        return None, ""


def wait_serving(fresh, what, timeout, rc_file):
    """Until / answers 200; fails with the user's terminal when the command ended first."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout) + 1):
        status, body = page_status()
        if status == 200:
            return body
        if fresh.exit_status(rc_file) is not None or time.monotonic() > deadline:
            break
        time.sleep(1)
    log = rc_file.replace(".rc", ".log")
    pytest.fail(
        f"{what}: {DEV_URL}/ never answered 200 (last: {status}; the command "
        f"{'exited ' + fresh.exit_status(rc_file) if fresh.exit_status(rc_file) else 'was still running'}). "
        f"What the user saw:\n{fresh.log_tail(log)}",
        pytrace=False,
    )


def events_answered():
    async def scenario():
        session = await LiveSession("ws://127.0.0.1:8000/ws/live/", DEV_URL).open()
        try:
            return [(await session.increment(ref))["type"] for ref in (1, 2)]
        finally:
            await session.close()

    return asyncio.run(asyncio.wait_for(scenario(), 60))


def stop_dev_server(fresh, rc_file):
    fresh.host.sh("pkill -TERM -f '[m]anage.py runserver' || true")
    wait_for(lambda: fresh.exit_status(rc_file) is not None, 30, "the dev server to stop")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    why = hosts.missing_requirements()
    if why:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    fresh = FreshHost(tmp_path_factory.mktemp("first-command"))
    with hosts.host_lock():
        try:
            yield fresh.prepare()
        finally:
            fresh.destroy()
            print(f"\nfirst-command host timings (s): {fresh.timings}")


def test_first_command_on_a_fresh_debian_host(fresh):
    started = time.monotonic()
    fresh.start_first_command()
    body = wait_serving(fresh, "the README's first command", 900, "first-command.rc")
    fresh.timings["first command to first page"] = round(time.monotonic() - started, 1)
    assert 'dj-view="core.views.CounterView"' in body, "the dev server's / is not the live counter"
    assert events_answered() == ["patch", "patch"], "the counter's clicks were not answered"
    stop_dev_server(fresh, "first-command.rc")
    output = fresh.log_tail(lines=10_000)
    assert "externally-managed-environment" not in output, output[-3000:]

    # "`make dev` runs the generated project again afterwards."
    started = time.monotonic()
    fresh.as_user(background("make dev", "make-dev", f"~/{SLUG}"))
    wait_serving(fresh, "make dev", 120, "make-dev.rc")
    fresh.timings["make dev to first page"] = round(time.monotonic() - started, 1)
    assert events_answered() == ["patch", "patch"], "after make dev, the counter's clicks were not answered"
    stop_dev_server(fresh, "make-dev.rc")

    # The generated README's second command: its tests and linters, on this host.
    started = time.monotonic()
    result = fresh.as_user(f"cd ~/{SLUG} && make test", timeout=600, check=False)
    fresh.timings["make test"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, (
        f"`make test` failed on the fresh host:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    )
    summary = [line for line in result.stdout.splitlines() if re.search(r"\b\d+ passed\b", line)]
    assert summary, f"`make test` ran no tests:\n{result.stdout[-3000:]}"
    fresh.timings["make test summary"] = summary[-1].strip("= ")
    print(f"\nfirst command on a fresh Debian 12 host, timings (s): {fresh.timings}")
