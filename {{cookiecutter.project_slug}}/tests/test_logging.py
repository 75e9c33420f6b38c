"""Log lines: JSON objects (readable lines in dev), no escape codes, no passwords from URLs."""

import io
import json
import logging
import logging.config

import pytest

from config.logging import build_logging


def test_lines_are_json_and_urls_are_redacted(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stdout", stream)
    logging.config.dictConfig(build_logging("INFO"))
    try:
        logging.getLogger("djust.state_backends.redis").info(
            "RedisStateBackend initialized: %s", "redis://:s3cr3t-pw@127.0.0.1:6379/0"
        )
        logging.getLogger("uvicorn.error").info("Started", extra={"color_message": "\x1b[1m"})
    finally:
        logging.config.dictConfig(build_logging())
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["message"] == "RedisStateBackend initialized: redis://:***@127.0.0.1:6379/0"
    assert lines[0]["level"] == "INFO"
    assert lines[0]["logger"] == "djust.state_backends.redis"
    assert "color_message" not in lines[1]
    assert "s3cr3t" not in stream.getvalue()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def log_readable(monkeypatch, stream, message):
    """Configure dev logging on `stream`, log one line, restore the JSON setup."""
    monkeypatch.setattr("sys.stdout", stream)
    logging.config.dictConfig(build_logging("INFO", readable=True))
    try:
        logging.getLogger("django.channels.server").warning(message)
    finally:
        logging.config.dictConfig(build_logging())
    return stream.getvalue()


def test_json_lines_carry_no_escape_codes(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stdout", stream)
    logging.config.dictConfig(build_logging("INFO"))
    try:
        # Daphne's runserver colours its request lines on a terminal.
        logging.getLogger("django.channels.server").info("\x1b[32;1mHTTP GET / 200\x1b[0m")
    finally:
        logging.config.dictConfig(build_logging())
    assert json.loads(stream.getvalue())["message"] == "HTTP GET / 200"
    assert "\\u001b" not in stream.getvalue()


@pytest.mark.parametrize(
    ("stream", "no_color", "coloured"),
    [(Terminal(), None, True), (Terminal(), "1", False), (io.StringIO(), None, False)],
    ids=["terminal", "terminal-NO_COLOR", "file"],
)
def test_readable_lines_are_coloured_only_on_a_terminal(monkeypatch, stream, no_color, coloured):
    if no_color:
        monkeypatch.setenv("NO_COLOR", no_color)
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    output = log_readable(monkeypatch, stream, "\x1b[33mHTTP GET /x 404\x1b[0m")
    assert not output.lstrip().startswith("{")
    assert output.rstrip().endswith("django.channels.server: HTTP GET /x 404")
    assert ("\x1b[33mWARNING " in output) is coloured
    assert output.count("\x1b") == (2 if coloured else 0)
