"""Deployment files, checked by the tools their users' machines run.

systemd-analyze, nginx -t, hadolint and actionlint read the generated files
as they are. No image can be built here (no Docker engine), so the Dockerfile
and compose file are also checked for their structure.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from tests.conftest import TEMPLATE_DIR
from tests.stack import self_signed_certificate
from tests.variants import VARIANTS

VARIANT_PARAMS = [pytest.param(v, id=v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS]


def tool(name, *fallbacks):
    """Path of a tool; under CI a missing tool fails, elsewhere the test is skipped."""
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    message = f"{name} is not installed (./scripts/test installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(*command, cwd=None):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


# --- systemd ------------------------------------------------------------------


def systemd_root(project, tmp_path):
    """A root directory holding the units where they are installed and the paths they run.

    `systemd-analyze verify` checks that ExecStart points at an executable, so
    /srv/<slug>/.venv/bin/python must exist: it does inside this root, next to
    the host's own unit files (sysinit.target & co.). The units are not edited.
    """
    root = tmp_path / "root"
    slug = project.slug
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for unit in (project.path / "deploy" / "systemd").glob(f"{slug}*"):
        shutil.copy(unit, units)
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (root / "bin").mkdir()
    shutil.copy("/usr/bin/kill", root / "bin" / "kill")
    venv_bin = root / "srv" / slug / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    shutil.copy("/bin/true", venv_bin / "python")
    for name in ("manage.py", "bin/serve"):
        (root / "srv" / slug / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(project.path / name, root / "srv" / slug / name)
    (root / "etc" / slug).mkdir()
    (root / "etc" / slug / "env").write_text("")
    return root, units


def unit_names(project):
    return [
        f"{project.slug}.service",
        f"{project.slug}-clearsessions.service",
        f"{project.slug}-clearsessions.timer",
    ]


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_systemd_units_verify_without_a_single_message(bake, tmp_path, variant):
    analyze = tool("systemd-analyze")
    project = bake(variant)
    root, units = systemd_root(project, tmp_path)
    result = run(analyze, "verify", f"--root={root}", *unit_names(project), cwd=units)
    # A misspelt key is only a warning with exit 0: any output at all fails.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_systemd_verify_would_catch_a_misspelt_key(bake, tmp_path):
    """Guard for the test above: the same check flags a typo in the unit."""
    analyze = tool("systemd-analyze")
    project = bake("default")
    root, units = systemd_root(project, tmp_path)
    unit = units / f"{project.slug}.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=on-failure\nRestartt=always"))
    result = run(analyze, "verify", f"--root={root}", unit.name, cwd=units)
    assert "Restartt" in result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
@pytest.mark.parametrize("unit", ["web", "clearsessions"])
def test_service_unit_exposure_is_two_or_lower(bake, tmp_path, variant, unit):
    analyze = tool("systemd-analyze")
    project = bake(variant)
    root, units = systemd_root(project, tmp_path)
    name = f"{project.slug}.service" if unit == "web" else f"{project.slug}-clearsessions.service"
    result = run(analyze, "security", "--offline=true", f"--root={root}", name, cwd=units)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_web_unit_type_matches_the_server(bake, variant):
    project = bake(variant)
    unit = (project.path / "deploy" / "systemd" / f"{project.slug}.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    # Plain uvicorn never calls sd_notify: Type=notify would hang the start.
    expected = "notify" if project.answers["asgi_server"] == "gunicorn" else "exec"
    assert settings["Type"] == expected
    assert settings["ExecStart"] == f"/srv/{project.slug}/.venv/bin/python /srv/{project.slug}/bin/serve"
    assert settings["EnvironmentFile"] == f"/etc/{project.slug}/env"
    assert "Environment" not in settings, "secrets belong in the EnvironmentFile"
    assert settings["KillMode"] == "mixed"
    # bin/serve exits 78 on a configuration error: no restart can fix that.
    assert "78" in settings["RestartPreventExitStatus"].split()
    assert int(settings["StartLimitBurst"]) <= 5
    graceful = 20  # GRACEFUL_TIMEOUT's default in config/server.py
    assert int(settings["TimeoutStopSec"]) > graceful
    assert settings["Restart"] == "on-failure"


# --- Nginx --------------------------------------------------------------------


def nginx_test(site_text, tmp_path):
    """Run `nginx -t` on a site inside a minimal wrapper config under tmp_path."""
    nginx = tool("nginx", "/usr/sbin/nginx")
    prefix = tmp_path / "nginx"
    (prefix / "conf").mkdir(parents=True)
    (prefix / "logs").mkdir()
    (prefix / "conf" / "site.conf").write_text(site_text)
    (prefix / "conf" / "nginx.conf").write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n  access_log {prefix}/logs/access.log;\n  include {prefix}/conf/site.conf;\n}}\n"
    )
    return run(
        nginx, "-t", "-p", str(prefix), "-e", str(prefix / "logs" / "error.log"), "-c", "conf/nginx.conf"
    )


def with_test_certificate(site_text, tmp_path, domain):
    """Only the certificate paths change: they point at a self-signed pair."""
    cert, key = self_signed_certificate(tmp_path)
    live = f"/etc/letsencrypt/live/{domain}"
    for name in ("fullchain.pem", "privkey.pem", "chain.pem"):
        assert f"{live}/{name}" in site_text, name
    # chain.pem (the issuer, for OCSP stapling): a self-signed certificate is its own.
    for name, path in (("fullchain.pem", cert), ("privkey.pem", key), ("chain.pem", cert)):
        site_text = site_text.replace(f"{live}/{name}", str(path))
    return site_text


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_nginx_site_passes_nginx_t(bake, tmp_path, variant):
    project = bake(variant)
    site = project.path / "deploy" / "nginx" / f"{project.slug}.conf"
    if project.answers["proxy"] != "nginx":
        assert not (project.path / "deploy" / "nginx").exists()
        notes = (project.path / "deploy" / "load-balancer" / "README.md").read_text()
        for must in ("3600", "X-Forwarded-Proto", "/health/live/", "FORWARDED_ALLOW_IPS"):
            assert must in notes
        return
    text = site.read_text()
    result = nginx_test(with_test_certificate(text, tmp_path, project.domain), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_nginx_compose_site_passes_nginx_t(bake, tmp_path, variant):
    """The site compose.yaml mounts into its nginx container.

    Besides the certificate paths, one more thing changes: nginx resolves
    upstream host names when it loads, and the compose service name `web`
    exists only on the compose network, so it becomes 127.0.0.1 here.
    """
    project = bake(variant)
    if project.answers["proxy"] != "nginx":
        assert not (project.path / "deploy" / "nginx" / "compose.conf").exists()
        return
    text = (project.path / "deploy" / "nginx" / "compose.conf").read_text()
    assert "server web:8000 max_fails=0;" in text
    assert ("hash $remote_addr consistent;" in text) == project.answers["sticky_sessions"]
    assert "ip_hash" not in text.replace("`ip_hash`", "")  # keys on a /24, not the client
    assert "proxy_set_header Connection $connection_upgrade;" in text
    site = with_test_certificate(text, tmp_path, project.domain)
    site = site.replace("server web:8000", "server 127.0.0.1:8000")
    result = nginx_test(site, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_would_catch_a_broken_site(bake, tmp_path):
    """Guard for the test above: a typo in the site makes nginx -t fail."""
    project = bake("default")
    text = (project.path / "deploy" / "nginx" / f"{project.slug}.conf").read_text()
    broken = with_test_certificate(text, tmp_path, project.domain).replace(
        "proxy_read_timeout 3600s;", "proxy_read_timeout;"
    )
    assert nginx_test(broken, tmp_path).returncode != 0


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_nginx_site_content(bake, variant):
    project = bake(variant)
    if project.answers["proxy"] != "nginx":
        # A load balancer terminates TLS: no site, and no sticky hash anywhere.
        assert not list(project.path.glob("deploy/**/*.conf"))
        return
    text = (project.path / "deploy" / "nginx" / f"{project.slug}.conf").read_text()
    directives = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "listen 443 ssl http2;" in directives and "http2 on;" not in directives  # nginx 1.22
    assert "return 301 https://$host$request_uri;" in text
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{\s*default upgrade;\s*''\s*'';", text)
    assert "proxy_set_header Connection $connection_upgrade;" in text
    assert 'proxy_set_header Connection "upgrade"' not in text  # would break upstream keepalive
    for header in ("Host $host", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme"):
        assert f"proxy_set_header {header};" in text
    ws_block = text[text.index("location /ws/") :]
    timeout = int(re.search(r"proxy_read_timeout (\d+)s;", ws_block).group(1))
    assert timeout >= 3600
    assert f"alias /srv/{project.slug}/staticfiles/;" in text and "immutable" in text
    assert "location = /nginx-health" in text
    assert ("hash $remote_addr consistent;" in text) == project.answers["sticky_sessions"]
    assert "ip_hash" not in text.replace("`ip_hash`", "")  # keys on a /24, not the client
    assert "server 127.0.0.1:8000" in text and "keepalive" in text
    # Rolling deploys lose nothing (tests/test_cluster.py): never marked down, idempotent retries.
    assert "server 127.0.0.1:8000 max_fails=0;" in directives
    assert "proxy_next_upstream error timeout http_502 http_503;" in directives
    assert "non_idempotent" not in directives
    assert "worker_connections" in text  # the capacity note


# --- Docker -------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_dockerfile_passes_hadolint(bake, variant):
    hadolint = tool("hadolint")
    project = bake(variant)
    result = run(hadolint, "--config", str(project.path / ".hadolint.yaml"), "Dockerfile", cwd=project.path)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((project.path / ".hadolint.yaml").read_text())
    assert config.get("ignored") in (None, []), "an ignored rule needs its reason in .hadolint.yaml"


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_dockerfile_structure(bake, variant):
    project = bake(variant)
    parser = DockerfileParser(path=str(project.path / "Dockerfile"))
    instructions = parser.structure
    froms = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    args = {
        i["value"].split("=")[0]: i["value"].split("=")[1] for i in instructions if i["instruction"] == "ARG"
    }
    assert args["PYTHON_VERSION"] == project.answers["python_version"]
    assert all(f.startswith("python:${PYTHON_VERSION}-slim") for f in froms), froms
    final = max(i["startline"] for i in instructions if i["instruction"] == "FROM")
    runtime = [i for i in instructions if i["startline"] >= final]
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the runtime stage must not run as root"
    healthcheck = " ".join(i["value"] for i in runtime if i["instruction"] == "HEALTHCHECK")
    assert "/health/live/" in healthcheck and "curl" not in healthcheck and "wget" not in healthcheck
    cmd = [i["value"] for i in runtime if i["instruction"] == "CMD"]
    assert cmd and "bin/serve" in cmd[-1]
    assert any("collectstatic" in i["value"] for i in instructions if i["instruction"] == "RUN")
    envs = " ".join(i["value"] for i in instructions if i["instruction"] == "ENV")
    assert "DJANGO_SECRET_KEY" not in envs, "no secret in the image's environment"
    dockerignore = (project.path / ".dockerignore").read_text().split()
    assert ".env" in dockerignore and ".venv" in dockerignore


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_compose_file_holds_the_stack(bake, variant):
    project = bake(variant)
    compose = yaml.safe_load((project.path / "compose.yaml").read_text())
    services = compose["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--requirepass ${REDIS_PASSWORD:?" in redis_command
    assert "--maxmemory " in redis_command
    assert re.search(r"--maxmemory-policy volatile-\w+", redis_command)
    # The channel layer on an instance of its own that never evicts (tests/test_redis_memory.py).
    channels_command = " ".join(services["redis-channels"]["command"])
    assert "--requirepass ${REDIS_PASSWORD:?" in channels_command
    assert "--maxmemory " in channels_command and "--maxmemory-policy noeviction" in channels_command
    app_env = services["web"]["environment"]
    assert "@redis-channels:" in app_env["CHANNEL_REDIS_URL"] and "@redis:" in app_env["REDIS_URL"]
    assert "redis-channels" in services["migrate"]["depends_on"]
    assert ("postgres" in services) == (project.answers["database"] == "postgresql")
    assert ("nginx" in services) == (project.answers["proxy"] == "nginx")
    assert services["web"]["deploy"]["replicas"] >= 2
    assert services["web"]["env_file"] == ".env"
    for name, service in services.items():
        if name != "migrate":  # a one-shot job; web waits for it to complete
            assert "healthcheck" in service, f"{name} has no healthcheck"
    grace = int(services["web"]["stop_grace_period"].rstrip("s"))
    assert grace > 20
    env_names = set((project.path / ".env.example").read_text().split())
    assert any(line.startswith("REDIS_PASSWORD=") for line in env_names)


# --- GitHub workflows ---------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_generated_workflows_pass_actionlint(bake, variant):
    actionlint = tool("actionlint")
    project = bake(variant)
    workflows = sorted(
        str(path.relative_to(project.path)) for path in project.path.glob(".github/workflows/*")
    )
    assert workflows == [".github/workflows/ci.yml", ".github/workflows/template-update.yml"]
    result = run(actionlint, *workflows, cwd=project.path)
    assert result.returncode == 0, result.stdout + result.stderr
    workflow = yaml.safe_load((project.path / ".github" / "workflows" / "ci.yml").read_text())
    test_job = workflow["jobs"]["test"]
    assert "redis" in test_job["services"]
    assert ("postgres" in test_job["services"]) == (project.answers["database"] == "postgresql")
    steps = " ".join(str(step.get("run", "")) for step in test_job["steps"])
    assert "check --deploy --fail-level WARNING" in steps
    assert "config.settings.prod" in str(test_job["steps"])


def test_template_workflow_passes_actionlint():
    actionlint = tool("actionlint")
    result = run(actionlint, str(TEMPLATE_DIR / ".github" / "workflows" / "template.yml"), cwd=TEMPLATE_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
