"""One logging configuration for Django, uvicorn and gunicorn: JSON lines on stdout.

Every line the service writes is one JSON object, so a log shipper can parse it
without guessing. bin/serve hands the same dictionary to the ASGI server, so its
startup and access lines are JSON too.
"""

import logging
import re

from config.env import env_str

JSON_FORMAT = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"

# Loggers that servers and libraries configure on their own. Each gets the JSON
# handler itself (gunicorn's uvicorn workers copy the handlers of
# gunicorn.error and gunicorn.access, so those must not be empty).
SERVER_LOGGERS = (
    "django",
    "django.request",
    "django.server",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "gunicorn",
    "gunicorn.error",
    "gunicorn.access",
    "py.warnings",
)


class RedactFilter(logging.Filter):
    """Hide passwords in URLs and drop uvicorn's ANSI-coloured duplicate message.

    djust logs its Redis URL at start; "redis://:SECRET@host" becomes
    "redis://:***@host" so secrets never reach the log shipper.
    """

    URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I)

    def filter(self, record):
        record.msg = self.URL_PASSWORD.sub(r"\g<scheme>***@", record.getMessage())
        record.args = None
        record.__dict__.pop("color_message", None)
        return True


def build_logging(level=None):
    """Return a dictConfig dictionary that writes JSON lines to stdout."""
    level = (level or env_str("DJANGO_LOG_LEVEL", "INFO")).upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": JSON_FORMAT,
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            },
        },
        "filters": {"redact": {"()": RedactFilter}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "json",
                "filters": ["redact"],
            },
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            name: {"handlers": ["stdout"], "level": level, "propagate": False}
            for name in SERVER_LOGGERS
        },
    }


def route_warnings_to_logging():
    """Send warnings.warn() output through logging instead of bare stderr text."""
    logging.captureWarnings(True)
