"""The demo LiveViews: a checklist and a counter, linked by live navigation."""

import logging

from asgiref.sync import async_to_sync
from djust import LiveView
from djust.decorators import event_handler
from djust.presence import PresenceMixin
from djust.push import origin_channel

from core import shared

logger = logging.getLogger(__name__)


class ChecklistView(LiveView):
    """A second page, reached from the counter with djust's live navigation.

    Adding a page takes a LiveView here, a template and a route in
    core/urls.py (README: "Adding a page").
    """

    template_name = "core/checklist.html"
    login_required = False

    STEPS = (
        ("settings", "Set SECRET_KEY, DJANGO_ALLOWED_HOSTS and REDIS_URL in .env"),
        ("deploy-check", "Run manage.py check --deploy under production settings"),
        ("backups", "Back up the database and Redis"),
        ("reconnect", "Restart the service and watch the page reconnect"),
    )

    def mount(self, request, **kwargs):
        self.done = []

    @event_handler()
    async def toggle(self, step: str = "", **kwargs):
        """Tick or untick one step; names outside STEPS are ignored."""
        if step not in dict(self.STEPS):
            return
        if step in self.done:
            self.done.remove(step)
        else:
            self.done.append(step)

    def get_context_data(self, **kwargs):
        steps = [
            {"key": key, "label": label, "done": key in self.done} for key, label in self.STEPS
        ]
        return {"steps": steps, "done_count": len(self.done), "total": len(steps)}


class CounterView(PresenceMixin, LiveView):
    """Counts clicks: the visitor's own, everyone's together, and who is here now.

    `count` belongs to this page alone. `total` (core/shared.py) and `online`
    (djust's presence) are shared by every page open on every worker and host,
    which is what Redis is there for: by default djust keeps presence in each
    process's memory, where a worker sees only its own visitors.
    """

    template_name = "core/counter.html"
    # A public demo page (djust check S005 wants this stated explicitly).
    login_required = False
    # Each open page counts once. With the default (False) an anonymous
    # visitor's tabs share one presence record, and djust removes that record
    # when any one of them closes, so the others would stop being counted.
    presence_unique_per_connection = True

    def mount(self, request, **kwargs):
        # Runs again on every reconnect, on whichever worker the page lands:
        # state a user must keep across a server restart belongs in the session,
        # the database or Redis, not here. So the visitor's own count starts
        # over, and the total is read again from the store, where it survived.
        self.count = 0
        # int(): djust's check V008 reads mount() and wants state it can see is
        # JSON-serialisable (it does not follow imported helpers).
        self.total = int(shared.read_total())
        # Registers this page (WebSocket mounts only; the first HTTP render is
        # skipped) and announces it through _broadcast_presence_change(). djust
        # removes the record when the socket closes. If a worker dies without
        # closing its sockets, its records expire after 60 s without the
        # client's 30 s ping, so `online` reads high for up to a minute while
        # those visitors reconnect to another worker.
        self.track_presence()
        self.online = int(self.presence_count())

    # An async handler runs on the worker's event loop. A plain `def` handler is
    # sent to a thread through sync_to_async on every event, a hop that cost more
    # than the handler itself under load (BENCHMARKS.md). Keep `def` for handlers
    # that use the ORM, or await its async API (`await Model.objects.aget(...)`).
    @event_handler()
    async def increment(self, **kwargs):
        self.count += 1
        self.total = max(self.total, await shared.add_click())
        # This page's own patch shows the new total at once; djust skips this
        # page when the push comes back to it.
        await shared.figures_changed(self.total)

    def handle_shared_figures(self, total=0, **kwargs):
        """Take the figures another page's click or arrival announced (a server push).

        Runs on every open counter page. Not an @event_handler, so djust lets
        server pushes call it (its name starts with handle_) but not browsers.
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
            async_to_sync(shared.figures_changed)()
        except Exception as exc:  # a closed loop at shutdown, Redis away
            logger.warning("Could not announce a presence change: %r", exc)
        finally:
            origin_channel.reset(token)

    def get_context_data(self, **kwargs):
        return {"count": self.count, "total": self.total, "online": self.online}
