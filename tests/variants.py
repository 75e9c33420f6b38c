"""The variant matrix: every pair of answers appears in at least one variant.

Six questions change the generated files. Their full product is 96 projects,
too many to bake, install and test on two cores, so the matrix covers every
pair of answers (tests/test_hooks.py::test_matrix_covers_every_pair proves
it) and names the combinations the production rehearsal runs.
"""

DEFAULTS = {
    "python_version": "3.12",
    "database": "postgresql",
    "asgi_server": "uvicorn",
    "use_sentry": True,
    "proxy": "nginx",
    "sticky_sessions": False,
}

# Readable id -> answers that differ from the defaults.
VARIANTS = {
    "default": {},
    "py3.12-sqlite-gunicorn-lb-sticky-nosentry": {
        "database": "sqlite",
        "asgi_server": "gunicorn",
        "use_sentry": False,
        "proxy": "load_balancer",
        "sticky_sessions": True,
    },
    "py3.13-lb-sticky": {
        "python_version": "3.13",
        "proxy": "load_balancer",
        "sticky_sessions": True,
    },
    "py3.13-sqlite-gunicorn-nosentry": {
        "python_version": "3.13",
        "database": "sqlite",
        "asgi_server": "gunicorn",
        "use_sentry": False,
    },
    "py3.11-sticky-nosentry": {
        "python_version": "3.11",
        "use_sentry": False,
        "sticky_sessions": True,
    },
    "py3.11-sqlite-gunicorn-lb": {
        "python_version": "3.11",
        "database": "sqlite",
        "asgi_server": "gunicorn",
        "proxy": "load_balancer",
    },
    "py3.12-gunicorn": {"asgi_server": "gunicorn"},
    "py3.12-sqlite": {"database": "sqlite"},
}

# The variants the production rehearsal starts for real (tests/test_rehearsal.py).
REHEARSAL_VARIANTS = {
    "default": "default",
    "sqlite_gunicorn": "py3.13-sqlite-gunicorn-nosentry",
    "load_balancer": "py3.13-lb-sticky",
    "sticky_sessions": "py3.11-sticky-nosentry",
}


def answers(variant):
    """The full set of answers for a variant id."""
    return {**DEFAULTS, **VARIANTS[variant]}
