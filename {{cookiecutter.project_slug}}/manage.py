#!/usr/bin/env python
"""Django's command-line utility; defaults to the dev settings."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    # Commands are not server workers: their metrics stay in memory, never in
    # the running server's files (the variable is set for the service and in
    # the Docker image; see config/metrics.py).
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
