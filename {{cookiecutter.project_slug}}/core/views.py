"""The demo LiveView: a counter whose clicks travel over the WebSocket."""

from djust import LiveView
from djust.decorators import event_handler


class CounterView(LiveView):
    """Counts clicks; each click is an `increment` event answered with a patch."""

    template_name = "core/counter.html"
    # A public demo page (djust check S005 wants this stated explicitly).
    login_required = False

    def mount(self, request, **kwargs):
        # Runs again on every reconnect: state a user must keep across a
        # server restart belongs in the session or the database, not here.
        self.count = 0

    # An async handler runs on the worker's event loop. A plain `def` handler is
    # sent to a thread through sync_to_async on every event, a hop that cost more
    # than the handler itself under load (BENCHMARKS.md). Keep `def` for handlers
    # that use the ORM, or await its async API (`await Model.objects.aget(...)`).
    @event_handler()
    async def increment(self, **kwargs):
        self.count += 1

    def get_context_data(self, **kwargs):
        return {"count": self.count}
