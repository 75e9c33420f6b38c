"""Bad answers are refused before any file is written; odd but valid ones stay data."""

import itertools
import subprocess
import sys

import pytest

from tests.conftest import TEMPLATE_DIR
from tests.variants import DEFAULTS, VARIANTS, answers

CHOICES = {
    "python_version": ["3.12", "3.13", "3.11"],
    "database": ["postgresql", "sqlite"],
    "asgi_server": ["uvicorn", "gunicorn"],
    "use_sentry": [True, False],
    "proxy": ["nginx", "load_balancer"],
    "sticky_sessions": [False, True],
}


def generate(tmp_path, **context):
    """Run the cookiecutter CLI as a user would, with answers given on the command line."""
    output = tmp_path / "out"
    output.mkdir()
    result = subprocess.run(
        [
            sys.executable, "-m", "cookiecutter", "--no-input", str(TEMPLATE_DIR),
            "--output-dir", str(output),
            *(f"{key}={value}" for key, value in context.items()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    return result, output


BAD_ANSWERS = [
    ("project_name", "   "),
    ("project_slug", "My-Service"),
    ("project_slug", "1service"),
    ("project_slug", "billing service"),
    ("project_slug", "class"),
    ("project_slug", "match"),
    ("project_slug", "django"),
    ("project_slug", "channels"),
    ("project_slug", "config"),
    ("project_slug", "test"),
    ("project_slug", "a" * 40),
    ("domain_name", ""),
    ("domain_name", "https://app.example.org"),
    ("domain_name", "app.example.org/path"),
    ("domain_name", "app.example.org:8443"),
    ("domain_name", "app example.org"),
    ("domain_name", "localhost"),
    ("domain_name", "your-domain.com"),
    ("domain_name", "App.Example.org"),
    ("domain_name", "192.168.1.10"),
    ("domain_name", "-bad.example.org"),
    ("domain_name", "*.example.org"),
    ("email", "nobody"),
    ("email", "nobody@localhost"),
    ("email", ""),
    ("session_ttl", "2h"),
    ("session_ttl", "0"),
    ("session_ttl", "-5"),
    ("session_ttl", "99999999"),
]


@pytest.mark.parametrize(("answer", "value"), BAD_ANSWERS, ids=[f"{a}={v!r}" for a, v in BAD_ANSWERS])
def test_bad_answer_is_refused_with_one_clear_line_and_nothing_written(tmp_path, answer, value):
    result, output = generate(tmp_path, **{answer: value})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"ERROR: {answer} "), errors[0]
    assert any(
        hint in errors[0] for hint in ("e.g.", "use ", "choose", "keep it", "write it", "give ", "pick ")
    ), errors[0]
    assert list(output.iterdir()) == [], "a refused answer must leave nothing on disk"


def test_hostile_text_answers_stay_data(tmp_path):
    name = 'Ann\'s "Quoted" \\ Service """'
    result, output = generate(
        tmp_path,
        project_name=name,
        project_slug="quoted_service",
        description='Says "hi" \\ and """ triple',
        author_name='O\'Brien "Ops"',
    )
    assert result.returncode == 0, result.stderr
    project = output / "quoted_service"
    readme = (project / "README.md").read_text()
    assert "Ann's" in readme
    pyproject = (project / "pyproject.toml").read_text()
    import tomllib

    parsed = tomllib.loads(pyproject)
    assert parsed["project"]["description"] == 'Says "hi" \\ and """ triple'


def test_slug_is_derived_from_the_name(tmp_path):
    result, output = generate(tmp_path, project_name="Billing Service")
    assert result.returncode == 0, result.stderr
    assert (output / "billing_service" / "manage.py").exists()


def test_regenerating_with_saved_answers_keeps_the_existing_env(tmp_path):
    result, output = generate(tmp_path, project_slug="kept_service")
    assert result.returncode == 0, result.stderr
    env_file = output / "kept_service" / ".env"
    original = env_file.read_text()
    rerun = subprocess.run(
        [
            sys.executable, "-m", "cookiecutter", "--no-input", "--overwrite-if-exists",
            "--skip-if-file-exists", str(TEMPLATE_DIR), "--output-dir", str(output),
            "project_slug=kept_service",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert env_file.read_text() == original, "regeneration must not replace secrets"


def test_matrix_covers_every_pair_of_answers():
    covered = set()
    for variant in VARIANTS:
        chosen = answers(variant)
        for a, b in itertools.combinations(sorted(CHOICES), 2):
            covered.add((a, str(chosen[a]), b, str(chosen[b])))
    missing = [
        (a, va, b, vb)
        for a, b in itertools.combinations(sorted(CHOICES), 2)
        for va in map(str, CHOICES[a])
        for vb in map(str, CHOICES[b])
        if (a, va, b, vb) not in covered
    ]
    assert not missing, f"pairs no variant covers: {missing}"
    assert answers("default") == DEFAULTS


def test_choices_match_cookiecutter_json():
    import json

    config = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
    for name, values in CHOICES.items():
        declared = config[name] if isinstance(config[name], list) else [config[name], not config[name]]
        assert sorted(map(str, declared)) == sorted(map(str, values)), name
        assert str(DEFAULTS[name]) == str(declared[0]), f"{name}: DEFAULTS must match cookiecutter.json"


def test_validator_docstring_examples_are_true():
    """The examples in each validator's docstring run as doctests."""
    import doctest
    import re
    import types

    source = (TEMPLATE_DIR / "hooks" / "pre_gen_project.py").read_text()
    # Replace the rendered-answers block with a literal, as cookiecutter would render it.
    source, count = re.subn(r'r"""\{\{.*?\}\}"""', '"{}"', source, flags=re.S)
    assert count == 1
    module = types.ModuleType("pre_gen_project")
    exec(compile(source, "pre_gen_project.py", "exec"), module.__dict__)
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert results.attempted >= 10
    assert results.failed == 0
