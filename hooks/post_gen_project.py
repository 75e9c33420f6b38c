"""Write the local .env with fresh secrets and print the next steps.

Generation stays offline and safe to re-run (cruft re-runs hooks on update):
no network, no installs, no git or docker calls, and an existing .env is kept.
"""

import json
from pathlib import Path
from runpy import run_path

ANSWERS = json.loads(
    r"""{{ {
        "project_slug": cookiecutter.project_slug,
        "domain_name": cookiecutter.domain_name,
        "proxy": cookiecutter.proxy,
    } | tojson }}"""
)


def main():
    project_dir = Path.cwd()
    # The same code a server runs to make its environment file (bin/new-env):
    # copy .env.example with fresh secrets, never replacing an existing file.
    write_env = run_path(str(project_dir / "bin" / "new-env"))["write_env"]
    wrote = write_env(project_dir / ".env")
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
