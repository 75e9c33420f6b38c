"""Write the local .env with fresh secrets and print the next steps.

Generation stays offline and safe to re-run (cruft re-runs hooks on update):
no network, no installs, no git or docker calls, and an existing .env is kept.
"""

import json
import secrets
from pathlib import Path

ANSWERS = json.loads(
    r"""{{ {
        "project_slug": cookiecutter.project_slug,
        "domain_name": cookiecutter.domain_name,
        "proxy": cookiecutter.proxy,
    } | tojson }}"""
)

# Placeholders in .env.example that get a fresh random value in .env.
SECRETS = {
    "change-me-secret-key": lambda: secrets.token_urlsafe(50),
    "change-me-redis-password": lambda: secrets.token_urlsafe(24),
    "change-me-postgres-password": lambda: secrets.token_urlsafe(24),
}


def write_env(project_dir):
    """Copy .env.example to .env, replacing every placeholder with a new secret."""
    env_file = project_dir / ".env"
    if env_file.exists():
        return False
    text = (project_dir / ".env.example").read_text()
    for placeholder, make in SECRETS.items():
        text = text.replace(placeholder, make())
    env_file.write_text(text)
    env_file.chmod(0o600)
    return True


def main():
    project_dir = Path.cwd()
    wrote = write_env(project_dir)
    slug = ANSWERS["project_slug"]
    deploy_doc = "deploy/nginx/README.md" if ANSWERS["proxy"] == "nginx" else "deploy/load-balancer/README.md"
    env_note = "with a fresh .env (secret key and passwords)" if wrote else "(kept the existing .env)"
    print(f"\nCreated {slug}/ {env_note}.")
    print(
        "\nNext steps:\n"
        f"  cd {slug}\n"
        "  uv run manage.py migrate && uv run manage.py runserver   # http://127.0.0.1:8000\n"
        "  uv run pytest                                            # the project's own tests\n"
        f"\nGoing to production at https://{ANSWERS['domain_name']}:"
        f" read docs/deployment.md and {deploy_doc}.\n"
    )


if __name__ == "__main__":
    main()
