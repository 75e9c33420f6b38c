"""Refuse bad answers before cookiecutter writes a single file.

Each validator is a small pure function: it returns None for a good answer and
an error message for a bad one. The answers arrive as JSON literals
(``tojson``), so hostile input stays data and never becomes code.
"""

import json
import keyword
import re
import sys

ANSWERS = json.loads(
    r"""{{ {
        "project_name": cookiecutter.project_name,
        "project_slug": cookiecutter.project_slug,
        "author_name": cookiecutter.author_name,
        "email": cookiecutter.email,
        "domain_name": cookiecutter.domain_name,
        "session_ttl": cookiecutter.session_ttl,
    } | tojson }}"""
)

SLUG_MAX_LENGTH = 32  # systemd unit, system user and Postgres role names stay readable

# Names a project slug must not take. cookiecutter runs this hook with its own
# Python, where Django and Channels are not installed, so "is it importable?"
# cannot be asked: the generated project's own packages, its dependencies and
# the standard-library modules it would shadow are listed by hand.
RESERVED_SLUGS = frozenset(
    {
        # the generated project's own packages and folders
        "config", "core", "tests", "bin", "deploy", "docs", "static", "staticfiles",
        # dependencies the project imports
        "django", "djust", "channels", "channels_redis", "daphne", "redis",
        "uvicorn", "uvicorn_worker", "gunicorn", "whitenoise", "csp", "sentry_sdk",
        "pythonjsonlogger", "dj_database_url", "psycopg",
        "psycopg2", "asgiref", "pytest", "pytest_django", "ruff",
        # standard-library modules a top-level folder would shadow
        "test", "logging", "json", "email", "http", "html", "site", "types",
        "typing", "string", "select", "signal", "socket", "secrets", "os", "sys",
        "io", "re", "time", "uuid", "queue", "asyncio", "collections", "random",
        "code", "operator", "token", "tokenize", "inspect", "abc", "copy", "enum",
    }
)  # fmt: skip

PLACEHOLDER_DOMAINS = frozenset(
    {
        "domain.com", "yourdomain.com", "your-domain.com", "mydomain.com",
        "my-domain.com", "changeme.com", "todo.com", "example", "localhost",
    }
)  # fmt: skip

HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
EMAIL = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$")


def validate_project_name(value):
    """A non-empty human name.

    >>> validate_project_name("Billing Service") is None
    True
    >>> validate_project_name("  ")
    'must not be empty: give your service a name, e.g. "Billing Service"'
    """
    if not value.strip():
        return 'must not be empty: give your service a name, e.g. "Billing Service"'
    return None


def validate_project_slug(value):
    """A short lowercase Python identifier that shadows nothing.

    >>> validate_project_slug("billing_service") is None
    True
    >>> validate_project_slug("Billing-Service")  # doctest: +ELLIPSIS
    'is "Billing-Service": use lowercase letters, digits and underscores...'
    >>> validate_project_slug("django")  # doctest: +ELLIPSIS
    'is "django", which would shadow ...'
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", value) or not value.isidentifier():
        return (
            f'is "{value}": use lowercase letters, digits and underscores, '
            'starting with a letter, e.g. "billing_service"'
        )
    if keyword.iskeyword(value) or keyword.issoftkeyword(value):
        return f'is "{value}", a Python keyword: pick another name, e.g. "{value}_service"'
    if value in RESERVED_SLUGS:
        return (
            f'is "{value}", which would shadow a module the project imports: '
            f'pick another name, e.g. "{value}_service"'
        )
    if len(value) > SLUG_MAX_LENGTH:
        return (
            f"is {len(value)} characters long: keep it to {SLUG_MAX_LENGTH} or fewer, "
            "it names the systemd unit, the system user and the database"
        )
    return None


def validate_domain_name(value):
    """A bare, lowercase, fully qualified host name.

    >>> validate_domain_name("app.example.org") is None
    True
    >>> validate_domain_name("https://app.example.org/")  # doctest: +ELLIPSIS
    'is "https://app.example.org/": give the bare host name...'
    >>> validate_domain_name("localhost")  # doctest: +ELLIPSIS
    'is "localhost", a placeholder...'
    """
    fix = 'give the bare host name the service answers on, e.g. "app.example.org"'
    if not value.strip():
        return f"must not be empty: {fix}"
    if value != value.strip() or any(c in value for c in " /:?#@*\\\t\n"):
        return f'is "{value}": {fix} (no scheme, port, path or spaces)'
    if value in PLACEHOLDER_DOMAINS or any(c in value for c in "<>{}[]"):
        return f'is "{value}", a placeholder: {fix}'
    if value != value.lower():
        return f'is "{value}": write it in lowercase, e.g. "{value.lower()}"'
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2 or not all(map(HOST_LABEL.match, labels)):
        return f'is "{value}", not a valid host name: {fix}'
    if labels[-1].isdigit():
        return f'is "{value}", an IP address: {fix}'
    return None


def validate_email(value):
    """An address with one @ and a dotted domain.

    >>> validate_email("ops@example.org") is None
    True
    >>> validate_email("ops")  # doctest: +ELLIPSIS
    'is "ops", not an email address...'
    """
    if not EMAIL.match(value):
        return f'is "{value}", not an email address: give one like "ops@example.org"'
    return None


def validate_session_ttl(value):
    """Whole seconds between one minute and thirty days.

    >>> validate_session_ttl("7200") is None
    True
    >>> validate_session_ttl("2h")  # doctest: +ELLIPSIS
    'is "2h", not a whole number of seconds...'
    """
    text = str(value).strip()
    if not text.isdigit():
        return f'is "{value}", not a whole number of seconds: use e.g. 7200 for two hours'
    if not 60 <= int(text) <= 30 * 24 * 3600:
        return f"is {text}: choose between 60 (one minute) and 2592000 (thirty days) seconds"
    return None


VALIDATORS = {
    "project_name": validate_project_name,
    "project_slug": validate_project_slug,
    "domain_name": validate_domain_name,
    "email": validate_email,
    "session_ttl": validate_session_ttl,
}


def main():
    for name, validate in VALIDATORS.items():
        problem = validate(ANSWERS[name])
        if problem:
            print(f"ERROR: {name} {problem}.", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
