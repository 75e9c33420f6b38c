"""One logging configuration for Django, uvicorn and gunicorn: JSON lines on stdout.

Every line the service writes is one JSON object, so a log shipper can parse it
without guessing. bin/serve hands the same dictionary to the ASGI server, so its
startup and access lines are JSON too. Development (config.settings.dev) asks
for readable lines instead: build_logging(readable=True).
"""

import logging
import os
import re
import sys

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
    """Hide passwords in URLs and drop terminal colour codes from messages.

    djust logs its Redis URL at start; "redis://:SECRET@host" becomes
    "redis://:***@host" so secrets never reach the log shipper. Servers colour
    some messages themselves (Daphne's runserver request lines, uvicorn's
    color_message): those escape codes would land inside JSON strings as
    "\\u001b[...", so they go; the readable formatter adds its own colour.
    """

    URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.I)
    ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

    def filter(self, record):
        message = self.URL_PASSWORD.sub(r"\g<scheme>***@", record.getMessage())
        record.msg = self.ANSI_ESCAPE.sub("", message)
        record.args = None
        record.__dict__.pop("color_message", None)
        return True


class PrintedTwiceFilter(logging.Filter):
    """Drop the djust records that djust also print()s, so each line shows once.

    enable_hot_reload() prints "[HotReload] Hot reload enabled for ..." to
    stdout and then logs the same text; the print cannot be turned off.
    """

    PRINTED = ("[HotReload] Hot reload enabled for directories",)

    def filter(self, record):
        return not record.getMessage().startswith(self.PRINTED)


# Terminal colours of the level names in readable lines.
LEVEL_COLOURS = {
    logging.DEBUG: "\x1b[2m",  # dim
    logging.INFO: "\x1b[32m",  # green
    logging.WARNING: "\x1b[33m",  # yellow
    logging.ERROR: "\x1b[31m",  # red
    logging.CRITICAL: "\x1b[1;31m",  # bold red
}
RESET_COLOUR = "\x1b[0m"


class ReadableFormatter(logging.Formatter):
    """One plain line per record for a person at a terminal: time, level, logger, message.

    The level is coloured only when the stream is a terminal and NO_COLOR
    (https://no-color.org) is unset, so a redirected log holds no escape codes.
    """

    def __init__(self, stream=None):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
        stream = stream or sys.stdout
        self.colour = stream.isatty() and not os.environ.get("NO_COLOR")

    def formatMessage(self, record):
        levelname = f"{record.levelname:<8}"
        if self.colour:
            levelname = f"{LEVEL_COLOURS.get(record.levelno, '')}{levelname}{RESET_COLOUR}"
        # A copy: other handlers may format the same record after this one.
        copy = logging.makeLogRecord({**record.__dict__, "levelname": levelname})
        return super().formatMessage(copy)


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


def build_logging(level=None, readable=False):
    """Return a dictConfig dictionary that writes JSON lines (or readable ones) to stdout."""
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
            "readable": {"()": ReadableFormatter},
        },
        "filters": {
            "redact": {"()": RedactFilter},
            "client_mistakes": {"()": ClientMistakeFilter},
            "printed_twice": {"()": PrintedTwiceFilter},
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "readable" if readable else "json",
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
            "djust": {"filters": ["printed_twice"]},
        },
    }


def route_warnings_to_logging():
    """Send warnings.warn() output through logging instead of bare stderr text."""
    logging.captureWarnings(True)
