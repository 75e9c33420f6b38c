"""djust's LiveView WebSocket consumer, made strict about what anonymous clients send.

Anyone who can load a page can open /ws/live/ and send any bytes. djust 1.2.6
refuses every malformed message, but many of them only after an exception,
which it logs at ERROR with a full traceback (and, with SENTRY_DSN set, turns
into a Sentry event): JSON that is not an object, binary frames, a mount of
djust's own LiveView base class. That lets one socket fill the log and the
error quota with about 100 tracebacks a second.

This subclass checks the envelope of each message before djust reads it and
refuses what no djust client sends with one error frame and one WARNING line,
counted against djust's per-connection rate limit so a stream of them ends in
a 4429 close like any other flood. Valid messages go to djust untouched.
config.logging.ClientMistakeFilter covers the mistakes djust finds deeper in.

It also keeps the session in its channel-layer groups for as long as the
socket is open (GroupKeeper below), and records the LiveView metrics of
core/metrics.py: djust 1.2.6 offers no hook for connects, events or pushes (its
only signals are for errors and full re-renders), so they are counted here,
around each call into djust, without changing what djust does.

And it skips channels' database-connection cleanup before a message while no
database connection is open to clean (core/db_connections.py): the demo's
events never touch the database, and each cleanup is a thread hop.
"""

import asyncio
import json
import logging
import time

from channels.consumer import get_handler_name
from djust.config import config as djust_config
from djust.security.mount import is_view_path_allowed, resolve_view_class
from djust.websocket import LiveViewConsumer

from core import metrics
from core.db_connections import SHARED_THREAD

logger = logging.getLogger(__name__)

# djust's close code for "too many messages" (its own rate limit uses it too).
CLOSE_RATE_LIMITED = 4429
# Views one mount_batch frame may mount (djust's client batches the lazy views
# of one page). Each mount renders a template: without a cap one 64 KB frame
# could ask for a thousand renders.
MAX_BATCH_MOUNTS = 20
# Frames djust answers a message with when it refuses it or drops it.
REFUSAL_FRAMES = {"error", "rate_limit_exceeded"}


class GroupKeeper:
    """Joins every open session of this worker to its groups again, every `interval` seconds.

    channels-redis drops a channel from a group group_expiry seconds after it
    joined (DJUST_SESSION_TTL here), and the group key itself expires that long
    after the last join. djust joins once, at mount: a page left open longer
    silently stopped receiving server pushes (measured with a 5 s expiry).
    Joining again is one ZADD and EXPIRE per group.

    One loop per worker rather than a task per session: a sleeping task costs
    about 1.4 KB (its coroutine, future and timer), a set entry about 0.1 KB.
    The interval is a third of group_expiry, so a session that joined just
    after a round is renewed well within its expiry.
    """

    def __init__(self):
        self.sessions = set()
        self.task = None

    def add(self, consumer, interval):
        self.sessions.add(consumer)
        loop = asyncio.get_running_loop()
        if self.task is None or self.task.done() or self.task.get_loop() is not loop:
            self.task = loop.create_task(self.renew(interval))

    def discard(self, consumer):
        self.sessions.discard(consumer)

    async def renew(self, interval):
        while self.sessions:
            await asyncio.sleep(interval)
            for consumer in list(self.sessions):
                for group in consumer.channel_groups():
                    if consumer not in self.sessions:  # closed meanwhile: djust has left its groups
                        break
                    try:
                        await consumer.channel_layer.group_add(group, consumer.channel_name)
                    except Exception as error:  # retried at the next round
                        logger.warning("Could not renew channel-layer group %s: %r", group, error)


GROUP_KEEPER = GroupKeeper()


class StrictLiveViewConsumer(LiveViewConsumer):
    """LiveViewConsumer that refuses malformed messages before djust parses them."""

    async def dispatch(self, message):
        """channels 4.3's AsyncConsumer.dispatch, with its cleanup run only when needed.

        channels awaits aclose_old_connections() here before every message
        (connect, each frame, each server push, disconnect). This is its code
        with that one call replaced; tests/test_db_connections.py fails if a
        channels release changes the method, so a change there is read before
        an upgrade ships.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler:
            await SHARED_THREAD.aclose_old_connections()
            await handler(message)
        else:
            raise ValueError(f"No handler for message type {message['type']}")

    async def connect(self):
        self.refused_messages = 0
        self.refusals_sent = 0
        self.counted_open = False
        try:
            await super().connect()
        except Exception as error:
            # djust joins a channel-layer group here: Redis unreachable or full.
            if metrics.is_channel_layer_error(error):
                metrics.BACKEND_ERRORS.labels(backend="channel_layer").inc()
            raise
        # djust closes some sockets inside connect() (Origin, per-IP cap).
        if not getattr(self, "_ws_close_sent", False):
            self.counted_open = True
            metrics.CONNECTS.inc()
            metrics.SESSIONS_OPEN.inc()
        expiry = getattr(self.channel_layer, "group_expiry", None)
        if expiry and self.counted_open:
            GROUP_KEEPER.add(self, expiry / 3)

    def channel_groups(self):
        """The channel-layer groups djust has joined this session to (after its mount)."""
        groups = [getattr(self, "_view_group", None), getattr(self, "_presence_group", None)]
        groups += [f"djust_db_notify_{name}" for name in getattr(self, "_db_notify_channels", ())]
        return [group for group in groups if group]

    async def receive(self, text_data=None, bytes_data=None):
        # Once the socket is closing (rate limit, failed auth), frames the client
        # queued before our close frame reached it are dropped unread. djust
        # 1.2.6 handles each of them, logging "Rate limit exceeded" once per
        # frame: 158 lines for one flood.
        if getattr(self, "_ws_close_sent", False):
            return
        self.mount_message = None
        self.message_type = None
        problem = self.envelope_problem(text_data, bytes_data)
        if problem:
            if self.message_type == "event":
                metrics.EVENTS_MALFORMED.inc()
            await self.refuse(*problem)
            return
        if self.mount_message is not None:
            text_data = self.mount_the_page_on_screen(self.mount_message, text_data)
        if self.message_type != "event":
            await super().receive(text_data=text_data, bytes_data=bytes_data)
            return
        # An ordinary handler's patch has been handed to the server when djust
        # returns; a refusal shows as an error frame sent meanwhile (send_json).
        started = time.perf_counter()
        refusals = self.refusals_sent
        await super().receive(text_data=text_data, bytes_data=bytes_data)
        if self.refusals_sent > refusals:
            metrics.EVENTS_REJECTED.inc()
        else:
            metrics.EVENTS_HANDLED.inc()
            metrics.EVENT_SECONDS.observe(time.perf_counter() - started)

    async def send_json(self, data):
        if data.get("type") in REFUSAL_FRAMES:
            self.refusals_sent = getattr(self, "refusals_sent", 0) + 1
        await super().send_json(data)

    async def server_push(self, event):
        # djust skips the copy of a push that a session's own handler made
        # (djust #1677): count only the pushes it applies.
        sender = event.get("sender_channel")
        if self.view_instance is not None and not (sender and sender == self.channel_name):
            metrics.PUSHES.inc()
        await super().server_push(event)

    async def disconnect(self, close_code):
        GROUP_KEEPER.discard(self)
        if getattr(self, "refused_messages", 0) > 1:
            logger.warning(
                "Closed a WebSocket that sent %d malformed messages (code %s)",
                self.refused_messages,
                close_code,
            )
        # djust's __call__ may run disconnect() a second time after a failure;
        # the flag keeps the session from leaving the gauge twice.
        if getattr(self, "counted_open", False):
            self.counted_open = False
            metrics.SESSIONS_OPEN.dec()
            metrics.DISCONNECTS.labels(code=metrics.close_code_label(close_code)).inc()
        try:
            await super().disconnect(close_code)
        except Exception as error:
            # Leaving channel-layer groups (many sessions closing at once).
            if metrics.is_channel_layer_error(error):
                metrics.BACKEND_ERRORS.labels(backend="channel_layer").inc()
            raise

    def envelope_problem(self, text_data, bytes_data):
        """(error for the client, detail for the log), or None if djust may read it."""
        limit = djust_config.get("max_message_size", 65536)
        if bytes_data is not None:
            # djust's client sends JSON text; binary frames carry file uploads
            # only, to views that accept them (djust's UploadMixin).
            if getattr(self.view_instance, "_upload_manager", None) is None:
                return "Binary messages are not accepted", f"binary frame, {len(bytes_data)} bytes"
            return None
        text = text_data or ""
        if limit and len(text) * 4 > limit and len(text.encode()) > limit:
            return "Message too large", f"text frame of {len(text.encode())} bytes (limit {limit})"
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            return "Invalid message format", "text frame that is not JSON"
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return "Invalid message format", "JSON that is not an object with a string 'type'"
        kind = message["type"]
        self.message_type = kind
        if kind == "event":
            if not isinstance(message.get("event"), str):
                return "Invalid message format", "event without a string 'event' name"
            if not isinstance(message.get("params", {}), dict):
                return "Invalid message format", "event whose 'params' is not an object"
        elif kind == "mount":
            self.mount_message = message
            return self.mount_problem(message)
        elif kind == "mount_batch":
            views = message.get("views")
            if not isinstance(views, list) or len(views) > MAX_BATCH_MOUNTS:
                return "Invalid message format", "mount_batch without a short list of views"
            for view in views:
                if not isinstance(view, dict):
                    return "Invalid message format", "mount_batch entry that is not an object"
                problem = self.mount_problem(view)
                if problem:
                    return problem
        return None

    def mount_problem(self, message):
        """What is wrong with one view's mount request, or None."""
        if not isinstance(message.get("params", {}), dict):
            return "Invalid message format", "mount whose 'params' is not an object"
        if not self.mountable(message.get("view")):
            view = str(message.get("view"))[:100]
            return "View not found", f"mount of {view!r}, no LiveView of the allowed modules"
        return None

    def mount_the_page_on_screen(self, message, text_data):
        """Mount the LiveView of the page's URL, not the one the document was loaded with.

        After live navigation (dj-navigate) djust 1.2.6's client keeps the first
        page's dj-view on its root, and a reconnect sends that view with the
        current URL: the page at /checklist/ came back as the counter. djust
        resolves the view from the URL for live navigation itself (its #1647);
        this does the same for a plain mount, when the URL's view is mountable.
        """
        url = message.get("url")
        if not isinstance(url, str) or message.get("state_snapshot"):
            return text_data
        view = self._resolve_view_path_from_url(url)
        if view is None or view == message.get("view") or not self.mountable(view):
            return text_data
        logger.debug(
            "Mounting %s for %s (the client sent %s)",
            view,
            url[:100],
            str(message.get("view"))[:100],
        )
        return json.dumps({**message, "view": view})

    @staticmethod
    def mountable(view_path):
        """True for a LiveView class *defined* in a module of LIVEVIEW_ALLOWED_MODULES.

        djust checks the module part of the path only, so any LiveView a view
        module imports can be mounted through it: "core.views.LiveView" is
        djust's abstract base class, which fails with a traceback. Here the
        class's own module must be allowed too, and the class must name a
        template (an abstract base of your own names none).
        """
        if not isinstance(view_path, str):
            return False
        view_class = resolve_view_class(view_path).view_class
        if view_class is None:
            return False
        defined_at = f"{view_class.__module__}.{view_class.__qualname__}"
        return is_view_path_allowed(defined_at) and bool(
            getattr(view_class, "template_name", None) or getattr(view_class, "template", None)
        )

    async def refuse(self, error, detail):
        """Answer a malformed message with an error frame, or close a flood of them."""
        self.refused_messages += 1
        if not self._rate_limiter.check("malformed") and self._rate_limiter.should_disconnect():
            logger.warning("Closing a WebSocket that keeps sending malformed messages: %s", detail)
            await self.close(code=CLOSE_RATE_LIMITED)
            return
        # One line per connection; disconnect() reports how many more there were.
        log = logger.warning if self.refused_messages == 1 else logger.debug
        log("Refused a WebSocket message: %s", detail)
        await self.send_error(error)
