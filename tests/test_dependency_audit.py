"""The generated CI's dependency audit, run here as CI runs it, on every variant's locked dependencies.

The command is read from the generated workflow (job `audit`, step "Audit locked
dependencies") and run in the synced project, so the template's suite and a
generated project's CI cannot drift apart. pip-audit reads PyPI's advisory data
(per release: https://pypi.org/pypi/NAME/VERSION/json). Where that API is not
served (a PyPI mirror serves only the package index), the real audit is skipped
with that reason; the guard below still proves, against a local OSV stand-in,
that the command audits every locked package and fails on a finding.
"""

import json
import os
import subprocess
import sys
import threading
import tomllib
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.variants import VARIANTS

VARIANT_PARAMS = [pytest.param(v, id=v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS]
STEP = "Audit locked dependencies"


def audit_script(project):
    workflow = yaml.safe_load((project.path / ".github" / "workflows" / "ci.yml").read_text())
    steps = [step for step in workflow["jobs"]["audit"]["steps"] if step.get("name") == STEP]
    assert len(steps) == 1, f"one step named {STEP!r} expected in the audit job"
    return steps[0]["run"]


def locked_packages(project):
    """{name: version} of every package in uv.lock but the project itself."""
    lock = tomllib.loads((project.path / "uv.lock").read_text())
    return {
        canonicalize_name(package["name"]): package["version"]
        for package in lock["package"]
        if "version" in package and package.get("source", {}).get("virtual") != "."
        and package.get("source", {}).get("editable") != "."
    }  # fmt: skip


def exported_requirements(project):
    """{name: environment marker or None} from the requirements file the step wrote."""
    found = {}
    for line in (project.path / "requirements-audit.txt").read_text().splitlines():
        requirement, _, marker = line.partition(";")
        if "==" in requirement and not line.startswith((" ", "#")):
            found[canonicalize_name(requirement.split("==")[0].strip())] = marker.strip() or None
    return found


def run_audit(project, **env):
    """The workflow step's script under bash -e, as GitHub runs `run:` blocks."""
    # uv and uvx come from the template's test environment, as setup-uv provides them in CI.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", audit_script(project)],
        cwd=project.path, env=project.env(PATH=path, **env),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def advisory_data_served(name, version):
    """Whether PyPI's per-release JSON (pip-audit's data source) answers here; (bool, what was seen)."""
    url = f"https://pypi.org/pypi/{name}/{version}/json"
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            return "vulnerabilities" in json.load(response), f"{url}: no vulnerabilities field"
    except urllib.error.HTTPError as error:
        return False, f"{url} answered HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return False, f"{url} unreachable: {error}"


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_locked_dependencies_have_no_known_vulnerability(synced, variant):
    project = synced(variant)
    packages = locked_packages(project)
    served, seen = advisory_data_served("django", packages["django"])
    if not served:
        pytest.skip(f"PyPI's advisory data is not served here ({seen}); CI on GitHub runs this step")
    result = run_audit(project)
    assert result.returncode == 0, result.stdout + result.stderr


class OsvStandIn:
    """A local OSV query API (POST /v1/query) that knows one advisory and records every query."""

    def __init__(self, advisory):
        self.advisory = advisory  # (name, version, id) or None
        self.queried = {}
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name, version = query["package"]["name"], query["version"]
                server_self.queried[name] = version
                answer = {}
                if server_self.advisory and server_self.advisory[:2] == (name, version):
                    answer = {"vulns": [{
                        "id": server_self.advisory[2], "summary": "stand-in advisory",
                        "affected": [{"package": {"name": name, "ecosystem": "PyPI"}, "ranges": [
                            {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "999"}]}]}],
                    }]}  # fmt: skip
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.xdist_group("default")
def test_audit_checks_every_locked_package_and_fails_on_a_finding(synced):
    """Guard: the same step, pointed at a stand-in advisory feed, fails on one advisory for Django."""
    project = synced("default")
    packages = locked_packages(project)
    standin_env = {"PIP_AUDIT_VULNERABILITY_SERVICE": "osv"}
    with OsvStandIn(advisory=None) as clean:
        result = run_audit(project, PIP_AUDIT_OSV_URL=clean.url, **standin_env)
    assert result.returncode == 0, result.stdout + result.stderr
    # Every package of uv.lock is exported (all groups: the production stack and
    # the dev tools), and each one installed on this platform is audited.
    exported = exported_requirements(project)
    assert set(exported) == set(packages), set(exported) ^ set(packages)
    here = {name for name, marker in exported.items() if marker is None or Marker(marker).evaluate()}
    missing = here - set(clean.queried)
    assert not missing, f"not audited: {sorted(missing)}"
    assert clean.queried["django"] == packages["django"]

    with OsvStandIn(advisory=("django", packages["django"], "PYSEC-0000-STANDIN")) as feed:
        result = run_audit(project, PIP_AUDIT_OSV_URL=feed.url, **standin_env)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "PYSEC-0000-STANDIN" in result.stdout, result.stdout + result.stderr
