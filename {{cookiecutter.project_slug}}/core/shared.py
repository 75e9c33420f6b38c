"""What every open counter page shares: a total of clicks, and the push that spreads it.

Why Redis: a service with several workers on several hosts has no memory in
common. Each worker's Python objects die with it, and a user's reconnect may
land on any worker. So the total lives in Django's cache (Redis in production,
local memory in dev and tests), and news of a change travels over the channel
layer (Redis in production) to the pages open on every worker.

Why a throttle: a push makes every open counter page render. If each click
pushed, 50 visitors clicking twice a second would cost 50 x 100 = 5,000 renders
a second, about 5 s of CPU per second at djust's ~1 ms a render: two cores
cannot keep up. So each worker pushes at most once every PUSH_INTERVAL: a lone
click at once (leading edge), a burst as one more push at the end of the
interval (trailing edge) carrying the total as it then stands. A page's cost
no longer grows with the number of clicks: at most two pushes a second from
each worker, whatever the click rate. With N pages open on W workers that is
at most 2 x W x N renders a second (200 for 50 pages on two workers); an
audience of thousands needs a longer interval, or one push per interval for
the whole cluster (a Redis lock) instead of one per worker.
"""

import asyncio
import contextlib
import contextvars
import logging

from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import cache
from djust.presence import PresenceMixin
from djust.push import apush_to_view, origin_channel

logger = logging.getLogger(__name__)

COUNTER_VIEW = "core.views.CounterView"

# The total's cache key. Written with no timeout: Redis' `volatile-lru` policy
# (docs/deployment.md) evicts only keys that have a TTL, so under memory
# pressure sessions and cached pages go first and the total never does.
TOTAL_KEY = "demo:total-clicks"

# Seconds between two pushes from one worker. Another page sees a click within
# this plus a channel-layer hop; the template's tests hold it to under a second.
PUSH_INTERVAL = 0.5

# A push that cannot reach Redis gives up after this many seconds instead of
# holding up the click that triggered it.
PUSH_TIMEOUT = 2.0


def read_total():
    """The shared total as the store holds it now, created at 0 the first time."""
    # add() writes only if the key is missing; timeout=None means no TTL.
    cache.add(TOTAL_KEY, 0, timeout=None)
    return int(cache.get(TOTAL_KEY, 0))


async def add_click():
    """Count one click in the store; return the new total."""
    return await sync_to_async(_incr_total)()


def _incr_total():
    # cache.incr on Redis is one atomic INCR: clicks on different hosts at the
    # same instant are all counted, and the key keeps having no TTL.
    # Trap: Django 5.2's cache.aincr is not that. RedisCache has no async
    # version of its own, so aincr is BaseCache's get-then-set with the default
    # timeout (300 s): concurrent clicks are lost and the total expires. Hence
    # the sync incr, in a thread.
    try:
        return cache.incr(TOTAL_KEY)
    except ValueError:  # no key yet (the first click ever, or Redis was flushed)
        cache.add(TOTAL_KEY, 0, timeout=None)
        return cache.incr(TOTAL_KEY)


class ThrottledPush:
    """Tells every open counter page that the figures changed, at most once per interval.

    One instance per worker process (`figures_changed` below). At most one
    trailing push is pending at a time and it sleeps at most `interval`
    seconds: nothing piles up however fast clicks come, and a worker that is
    shutting down has nothing to wait for (asyncio cancels the sleep).
    """

    def __init__(self, interval):
        self.interval = interval
        self.pushes = 0  # pushes this worker has started, for tests and curiosity
        self._loop = None
        self._last_push = float("-inf")
        self._trailing = None

    async def __call__(self, total=None):
        """Push now if the last push is an interval old, else make sure one follows.

        `total` is the figure the caller just read from the store (a click
        knows it from INCR); None means "read it when pushing".
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # The first call, or a new event loop (each test has its own).
            self._loop, self._last_push, self._trailing = loop, float("-inf"), None
        if self._trailing is not None:
            return  # a push is already due; it reads the latest total when it goes
        wait = self._last_push + self.interval - loop.time()
        if wait <= 0:
            self._last_push = loop.time()
            await self._push(total)
        else:
            # A fresh context, not the caller's: in the caller's, djust marks
            # pushes as the clicking page's own (that page skips them), and
            # asgiref sends sync_to_async calls to the caller's thread, which
            # may be long gone by then. This push carries everyone's changes.
            self._trailing = loop.create_task(self._push_later(wait), context=contextvars.Context())

    async def aclose(self):
        """Cancel a push still waiting in this event loop.

        A worker's loop ends only at shutdown, where asyncio cancels it anyway;
        the tests' loops end after each test (tests/conftest.py).
        """
        task, self._trailing = self._trailing, None
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _push_later(self, wait):
        try:
            await asyncio.sleep(wait)
            # Cleared before pushing: a change that arrives while this push is
            # on its way schedules the next one instead of being lost.
            self._trailing = None
            self._last_push = asyncio.get_running_loop().time()
            await self._push(None)
        finally:
            if self._trailing is asyncio.current_task():
                self._trailing = None  # cancelled while asleep

    async def _push(self, total):
        try:
            async with asyncio.timeout(PUSH_TIMEOUT):
                self.pushes += 1
                if total is None:
                    total = await sync_to_async(read_total)()
                # Every mounted CounterView, on every worker and host sharing
                # the channel layer, runs its handle_shared_figures().
                await apush_to_view(
                    COUNTER_VIEW, handler="handle_shared_figures", payload={"total": total}
                )
        except Exception as exc:  # redis-py's errors are not OSErrors
            # Redis unreachable or slow: the click itself still counts, and the
            # pages catch up with the next push or their next mount.
            logger.warning("Could not push the counter's shared figures: %r", exc)


figures_changed = ThrottledPush(PUSH_INTERVAL)


class SharedFiguresMixin(PresenceMixin):
    """The figures a LiveView shares with every page of its class: `total` and `online`.

    `online` is djust's presence (djust.presence). By default djust keeps it in
    each process's memory, where a worker sees only its own visitors; production
    settings keep it in Redis (DJUST_CONFIG["PRESENCE_BACKEND"]).
    """

    # Each open page counts once. With the default (False) an anonymous
    # visitor's tabs share one presence record, and djust removes that record
    # when any one of them closes, so the others would stop being counted.
    presence_unique_per_connection = True

    def mount_shared_figures(self):
        """Read the figures from the stores and count this page in (from mount())."""
        self.total = read_total()
        # Registers this page (WebSocket mounts only; the first HTTP render is
        # skipped) and announces it through _broadcast_presence_change(). djust
        # removes the record when the socket closes. If a worker dies without
        # closing its sockets, its records expire after 60 s without the
        # client's 30 s ping, so `online` reads high for up to a minute while
        # those visitors reconnect to another worker.
        self.track_presence()
        self.online = self.presence_count()

    async def count_click(self):
        """Add one click to the total and tell the other pages."""
        self.total = max(self.total, await add_click())
        # This page's own patch shows the new total at once; djust skips this
        # page when the push comes back to it.
        await figures_changed(self.total)

    def shared_figures(self):
        return {"total": self.total, "online": self.online}

    def handle_shared_figures(self, total=0, **kwargs):
        """Take the figures another page's click or arrival announced (a server push).

        Runs on every open page of the view. Not an @event_handler, so djust
        lets server pushes call it (its name starts with handle_) but not browsers.
        """
        # Pushes from different workers can arrive out of order: keeping the
        # larger figure means the total never moves backwards on screen.
        self.total = max(self.total, int(total))
        # The number of open pages is read here rather than carried in the push,
        # so a late push can never bring back a stale figure.
        self.online = self.presence_count()
        # djust renders after every push, and sends an empty patch when nothing
        # changed. Setting self._skip_render would save that render, but djust
        # then sends a "noop" frame, which its client takes as the answer to a
        # click still in flight.

    def _broadcast_presence_change(self):
        """Announce an arrival or departure through the worker's throttled push.

        djust's own version pushes every arrival and departure to every open
        page at once: a deploy that reconnects N pages costs N x N renders.
        Overriding this hook (djust 1.2.6, djust/presence.py) puts presence
        changes under the same throttle as clicks. djust calls it from a worker
        thread, so the push is handed to the event loop with async_to_sync.
        """
        # Marked as this page's own, as djust marks pushes made by an event
        # handler: the page already shows its own arrival, so it skips the echo.
        own_channel = getattr(getattr(self, "_ws_consumer", None), "channel_name", None)
        token = origin_channel.set(own_channel)
        try:
            async_to_sync(figures_changed)()
        except Exception as exc:  # a closed loop at shutdown, Redis away
            logger.warning("Could not announce a presence change: %r", exc)
        finally:
            origin_channel.reset(token)
