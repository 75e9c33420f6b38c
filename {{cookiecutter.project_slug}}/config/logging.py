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


class ClientMistakeFilter(logging.Filter):
    """Log what an anonymous client got wrong as one WARNING line, never as an error.

    djust logs some malformed WebSocket messages at ERROR, most with a full
    traceback, although the only fault is the client's: JSON its parser
    rejects, and values of the wrong type that blow up in its last-resort
    handler ("Error in WebSocket receive: TypeError: ..."). At ERROR each one
    is also a Sentry event, so any visitor could fill the log and the error
    quota. core/consumers.py refuses the common shapes before djust sees them;
    this filter, on djust's consumer and runtime loggers, catches the rest.

    Only those records change: level WARNING, no traceback, the exception's
    type and message kept in the line. Errors in your own views (mount,
    handlers, rendering) are logged by djust under other messages and keep
    their ERROR level and traceback.
    """

    # Exception types a client's values cause in djust's message handling
    # (msgpack's decode errors are ValueErrors; JSON nested too deep for the
    # parser is a RecursionError). Anything else, such as Redis or database
    # errors, is a server fault and stays an ERROR.
    CLIENT_EXCEPTIONS = (
        AttributeError,
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        RecursionError,
    )
    # (logger, start of the message) of each djust record that reports bad input.
    CLIENT_MESSAGES = (
        ("djust.websocket", "Invalid JSON in WebSocket message"),
        ("djust.websocket", "Error in WebSocket receive"),
        ("djust.runtime", "Failed to load view"),
    )
    LOGGERS = sorted({name for name, _ in CLIENT_MESSAGES})

    def filter(self, record):
        if record.levelno >= logging.ERROR and self.is_client_mistake(record):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True

    def is_client_mistake(self, record):
        message = record.getMessage()
        if not any(
            record.name == name and message.startswith(start)
            for name, start in self.CLIENT_MESSAGES
        ):
            return False
        if record.exc_info:
            return isinstance(record.exc_info[1], self.CLIENT_EXCEPTIONS)
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
        "filters": {
            "redact": {"()": RedactFilter},
            "client_mistakes": {"()": ClientMistakeFilter},
        },
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
            **{
                name: {"handlers": ["stdout"], "level": level, "propagate": False}
                for name in SERVER_LOGGERS
            },
            # A logger's filters run before Sentry's logging integration sees the
            # record, so a record made a WARNING here never becomes a Sentry event.
            **{name: {"filters": ["client_mistakes"]} for name in ClientMistakeFilter.LOGGERS},
        },
    }


def route_warnings_to_logging():
    """Send warnings.warn() output through logging instead of bare stderr text."""
    logging.captureWarnings(True)
