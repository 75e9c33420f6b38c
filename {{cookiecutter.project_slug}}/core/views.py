"""The demo LiveViews: a checklist and a counter, linked by live navigation."""

from djust import LiveView
from djust.decorators import event_handler

from core.shared import SharedFiguresMixin


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


class CounterView(SharedFiguresMixin, LiveView):
    """Counts clicks: the visitor's own, everyone's together, and who is here now.

    `count` belongs to this page alone. `total` and `online` (core/shared.py)
    are shared by every page open on every worker and host, which is what
    Redis is there for.
    """

    template_name = "core/counter.html"
    # A public demo page (djust check S005 wants this stated explicitly).
    login_required = False

    def mount(self, request, **kwargs):
        # Runs again on every reconnect, on whichever worker the page lands:
        # state a user must keep across a server restart belongs in the session,
        # the database or Redis, not here. So the visitor's own count starts
        # over, and the shared total is read again from Redis, where it survived.
        self.count = 0
        self.mount_shared_figures()

    # An async handler runs on the worker's event loop. A plain `def` handler is
    # sent to a thread through sync_to_async on every event, a hop that cost more
    # than the handler itself under load (BENCHMARKS.md). Keep `def` for handlers
    # that use the ORM, or await its async API (`await Model.objects.aget(...)`).
    @event_handler()
    async def increment(self, **kwargs):
        self.count += 1
        await self.count_click()

    def get_context_data(self, **kwargs):
        return {**self.shared_figures(), **self.own_figures()}

    def own_figures(self):
        return {"count": self.count}
