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

    @event_handler()
    def increment(self, **kwargs):
        self.count += 1

    def get_context_data(self, **kwargs):
        return {"count": self.count}
