"""Log lines are single JSON objects and never carry a password from a URL."""

import io
import json
import logging
import logging.config

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
