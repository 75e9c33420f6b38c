"""Every variant generates a project that passes what its users would run on it."""

import json
import re

import pytest

from tests.variants import VARIANTS

# All tests of one variant run in the same xdist worker, so it is baked and
# installed once (`pytest -n 2 --dist loadgroup`).
VARIANT_PARAMS = [pytest.param(v, id=v, marks=pytest.mark.xdist_group(v)) for v in VARIANTS]

# Jinja that must never survive rendering. Django templates legitimately use
# {% ... %} and {{ ... }}, and GitHub workflows ${{ ... }}, so look for what only
# cookiecutter's templates contain.
LEFTOVER_TEMPLATE_SYNTAX = re.compile(r"cookiecutter\.|\{%-|-%\}|\{%\s*(raw|endraw|if cookiecutter)")

PROD_PRINT_BACKENDS = """
import json, django
django.setup()
from django.conf import settings
from channels.layers import get_channel_layer
from django.core.cache import caches
from djust.state_backends import get_backend
print(json.dumps({
    "debug": settings.DEBUG,
    "state_backend": type(get_backend()).__name__,
    "channel_layer": type(get_channel_layer()).__name__,
    "cache": type(caches["default"]).__name__,
    "channel_hosts": [
        {k: v for k, v in host.items() if k in ("socket_timeout", "max_connections")}
        for host in settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    ],
}))
"""


def prod_env(project, redis_url="redis://:secret@127.0.0.1:6379/0", **extra):
    """The environment production would give: .env's secrets plus required URLs."""
    env = project.dotenv()
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings.prod",
        REDIS_URL=redis_url,
        DATABASE_URL=(
            "postgres://app:secret@127.0.0.1:5432/app"
            if project.answers["database"] == "postgresql"
            else f"sqlite:///{project.path / 'db.sqlite3'}"
        ),
    )
    env.update(extra)
    return env


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_no_unrendered_template_syntax(bake, variant):
    project = bake(variant)
    offenders = []
    for path in project.path.rglob("*"):
        if path.is_file() and ".venv" not in path.parts:
            text = path.read_text(errors="replace")
            offenders += [
                f"{path.relative_to(project.path)}: {m.group(0)}"
                for m in LEFTOVER_TEMPLATE_SYNTAX.finditer(text)
            ]
        offenders += [str(path)] if "{{" in path.name or "{%" in path.name else []
    assert not offenders, "unrendered template syntax:\n" + "\n".join(offenders)


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_linters_are_clean(synced, variant):
    project = synced(variant)
    project.run("ruff", "check", ".")
    project.run("ruff", "format", "--check", ".")


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_check_deploy_prints_no_warning_under_prod_settings(synced, variant):
    project = synced(variant)
    # In the order of a real deploy: WhiteNoise warns when STATIC_ROOT is missing.
    project.run("python", "manage.py", "collectstatic", "--noinput", "-v0", env=prod_env(project))
    result = project.run(
        "python", "manage.py", "check", "--deploy", "--fail-level", "WARNING", env=prod_env(project)
    )
    output = result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in output, output
    assert "WARNING" not in output, output


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_no_missing_migrations(synced, variant):
    project = synced(variant)
    project.run("python", "manage.py", "makemigrations", "--check", "--dry-run")


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_generated_projects_own_tests_pass(synced, variant):
    project = synced(variant)
    result = project.run("pytest", "-q", "-p", "no:cacheprovider")
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_prod_really_uses_redis_for_state_channels_and_cache(synced, redis_url, variant):
    # An in-memory channel layer passes `check --deploy` silently: assert it.
    project = synced(variant)
    result = project.run("python", "-c", PROD_PRINT_BACKENDS, env=prod_env(project, redis_url))
    backends = json.loads(result.stdout.strip().splitlines()[-1])
    assert backends["debug"] is False
    assert backends["state_backend"] == "RedisStateBackend"
    assert backends["channel_layer"] == "RedisChannelLayer"
    assert backends["cache"] == "RedisCache"
    # Trap: redis-py 8 times idle consumers out after 5 s unless this is None.
    assert all(host["socket_timeout"] is None for host in backends["channel_hosts"])
    assert all(host["max_connections"] >= 500 for host in backends["channel_hosts"])


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "REDIS_URL"])
def test_prod_fails_loudly_without_a_required_secret(synced, variant, missing):
    project = synced(variant)
    env = prod_env(project, **{missing: ""})
    result = project.run("python", "manage.py", "check", env=env, check=False)
    assert result.returncode != 0
    assert f"Set the {missing} environment variable" in result.stderr


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("DJANGO_SECRET_KEY", "", "Set the DJANGO_SECRET_KEY environment variable"),
        ("REDIS_URL", "", "Set the REDIS_URL environment variable"),
        # systemd's EnvironmentFile keeps an inline comment as part of the value.
        ("HOST", "127.0.0.1  # private address", "HOST='127.0.0.1  # private address'"),
        ("DJANGO_SESSIONS_IN_DATABASE", "sometimes", "DJANGO_SESSIONS_IN_DATABASE='sometimes' is not"),
    ],
    ids=["no-secret-key", "no-redis-url", "bad-host", "bad-sessions-in-database"],
)
def test_serve_exits_78_with_one_line_naming_the_variable(synced, variant, name, value, named):
    # Checked once in the parent: no worker starts, so nothing is respawned forever
    # (uvicorn) and systemd is never told "ready" (gunicorn). The unit's
    # RestartPreventExitStatus=78 then leaves it failed instead of looping.
    project = synced(variant)
    env = prod_env(project, **{name: value})
    result = project.run("python", "bin/serve", env=env, timeout=30, check=False)
    assert result.returncode == 78, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["level"] == "CRITICAL"
    assert named in record["message"]


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_new_env_never_overwrites_and_keeps_secrets_private(synced, tmp_path, variant):
    project = synced(variant)
    target = tmp_path / "env"
    first = project.run("python", "bin/new-env", str(target))
    assert target.stat().st_mode & 0o777 == 0o600
    written = target.read_text()
    assert "change-me" not in written
    assert project.dotenv()["DJANGO_SECRET_KEY"] not in written, "every call makes new secrets"
    again = project.run("python", "bin/new-env", str(target), check=False)
    assert again.returncode == 1 and again.stderr.startswith("ERROR:"), first.stdout + again.stderr
    assert target.read_text() == written


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_dotenv_has_a_fresh_long_secret_and_no_placeholders(bake, variant):
    project = bake(variant)
    values = project.dotenv()
    assert len(values["DJANGO_SECRET_KEY"]) >= 50
    assert not values["DJANGO_SECRET_KEY"].startswith("django-insecure")
    assert "change-me" not in (project.path / ".env").read_text()
    assert values["DJANGO_SECRET_KEY"] not in (project.path / ".env.example").read_text()
    assert (project.path / ".env").stat().st_mode & 0o077 == 0, ".env must be private"


@pytest.mark.parametrize("variant", VARIANT_PARAMS)
def test_readme_opens_with_run_and_test_commands(bake, variant):
    project = bake(variant)
    readme = (project.path / "README.md").read_text()
    commands = re.findall(r"```(?:sh|bash|console)\n(.*?)```", readme, re.S)
    assert len(commands) >= 2
    assert "runserver" in commands[0]
    assert "pytest" in commands[1]
