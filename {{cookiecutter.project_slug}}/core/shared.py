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
import contextvars
import logging

from asgiref.sync import sync_to_async
from django.core.cache import cache
from djust.push import apush_to_view

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
