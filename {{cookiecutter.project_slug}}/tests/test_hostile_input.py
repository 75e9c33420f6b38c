"""What an anonymous client gets for messages no browser sends, and what the log says.

core/consumers.py refuses malformed messages with an error frame and one
WARNING line; config.logging.ClientMistakeFilter turns djust's own ERROR
records about bad input into WARNING lines without a traceback, and leaves
real server faults alone.
"""

import json
import logging

import pytest
from channels.testing import WebsocketCommunicator

from config.asgi import application
from config.logging import ClientMistakeFilter

ORIGIN = (b"origin", b"http://localhost")
MOUNT = {"type": "mount", "view": "core.views.CounterView", "params": {}, "url": "/"}


async def mounted_session():
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ORIGIN])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    assert (await communicator.receive_json_from(timeout=10))["type"] == "connect"
    await communicator.send_json_to(MOUNT)
    assert (await communicator.receive_json_from(timeout=10))["type"] == "mount"
    return communicator


MALFORMED = [
    ("{not json", "Invalid message format"),
    ("[1, 2]", "Invalid message format"),
    ("null", "Invalid message format"),
    ('{"type": 5}', "Invalid message format"),
    ('{"type": "event", "event": 5, "params": {}}', "Invalid message format"),
    ('{"type": "event", "event": "increment", "params": [1]}', "Invalid message format"),
    ('{"type": "mount", "view": "core.views.CounterView", "params": []}', "Invalid message format"),
    # djust's base class is importable from core.views, which djust allows.
    ('{"type": "mount", "view": "core.views.LiveView"}', "View not found"),
    ('{"type": "mount", "view": "core.views.Nope"}', "View not found"),
    ('{"type": "mount", "view": "os.system"}', "View not found"),
    ('{"type": "mount_batch", "views": [{"view": "core.views.LiveView"}]}', "View not found"),
    (json.dumps({"type": "event", "event": "go", "params": {"x": "a" * 70000}}), "too large"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize(("frame", "error"), MALFORMED, ids=[f[:40] for f, _ in MALFORMED])
async def test_malformed_messages_get_an_error_frame_and_one_warning(frame, error, caplog):
    communicator = await mounted_session()
    caplog.clear()
    try:
        with caplog.at_level(logging.DEBUG):
            await communicator.send_to(text_data=frame)
            reply = await communicator.receive_json_from(timeout=10)
        assert reply["type"] == "error" and error in reply["error"], reply
        # The session survives: the next click still works.
        await communicator.send_json_to({"type": "event", "event": "increment", "params": {}})
        assert (await communicator.receive_json_from(timeout=10))["type"] == "patch"
    finally:
        await communicator.disconnect()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.levelname for r in problems] == ["WARNING"], [r.getMessage() for r in problems]
    assert not any(r.exc_info for r in caplog.records)


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_binary_frames_are_refused():
    communicator = await mounted_session()
    try:
        await communicator.send_to(bytes_data=b"\x81\xa4type\xa5event")
        reply = await communicator.receive_json_from(timeout=10)
        assert reply == {"type": "error", "error": "Binary messages are not accepted"}
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_stream_of_malformed_messages_ends_in_4429_with_few_log_lines(caplog):
    communicator = await mounted_session()
    with caplog.at_level(logging.INFO):
        for _ in range(60):
            await communicator.send_to(text_data="{bad")
        output = None
        for _ in range(80):
            output = await communicator.receive_output(timeout=10)
            if output["type"] == "websocket.close":
                break
    await communicator.disconnect()
    assert output == {"type": "websocket.close", "code": 4429}
    # One refusal, djust's three rate-limit warnings, the close and a count:
    # not one line per frame.
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) <= 8


def record(name, message, *args, exc=None):
    exc_info = None
    if exc is not None:
        try:
            raise exc
        except Exception as error:
            exc_info = (type(error), error, error.__traceback__)
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, args, exc_info)


@pytest.mark.parametrize(
    "client_mistake",
    [
        record("djust.websocket", "Invalid JSON in WebSocket message: Expecting value"),
        record(
            "djust.websocket",
            "%s%s: %s: %s",
            "Error in WebSocket receive",
            "",
            "AttributeError",
            "'list' object has no attribute 'get'",
            exc=AttributeError("'list' object has no attribute 'get'"),
        ),
        record("djust.runtime", "Failed to load view core.views.Nope: Class Nope not found"),
    ],
)
def test_djust_records_of_client_mistakes_become_warnings(client_mistake):
    assert ClientMistakeFilter().filter(client_mistake)
    assert client_mistake.levelname == "WARNING"
    assert client_mistake.exc_info is None


@pytest.mark.parametrize(
    "server_fault",
    [
        # A bug in a view's handler: djust logs it under another message.
        record(
            "djust.runtime",
            "%s%s: %s: %s",
            "Error in handler CounterView.increment()",
            "",
            "TypeError",
            "boom",
            exc=TypeError("boom"),
        ),
        # The right message but a server-side cause (Redis, database).
        record(
            "djust.websocket",
            "%s%s: %s: %s",
            "Error in WebSocket receive",
            "",
            "ConnectionError",
            "Redis down",
            exc=ConnectionError("Redis down"),
        ),
        # Another library's logger.
        record("django.request", "Invalid JSON in WebSocket message", exc=ValueError("x")),
    ],
)
def test_server_faults_keep_their_level_and_traceback(server_fault):
    assert ClientMistakeFilter().filter(server_fault)
    assert server_fault.levelname == "ERROR"
    assert server_fault.exc_info is not None


def test_the_filter_sits_on_djusts_loggers_in_the_logging_settings(capsys):
    """Through the real configuration: one JSON line, WARNING, no traceback."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    try:
        raise TypeError("unhashable type: 'list'")
    except TypeError:
        logging.getLogger("djust.websocket").error(
            "%s%s: %s: %s", "Error in WebSocket receive", "", "TypeError", "x", exc_info=True
        )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert line["level"] == "WARNING" and "exc_info" not in line
