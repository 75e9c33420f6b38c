"""The template's demo counter (core/views.py in the generated project), unchanged."""

from djust import LiveView
from djust.decorators import event_handler


class CounterView(LiveView):
    template_name = "demo/counter.html"
    login_required = False

    def mount(self, request, **kwargs):
        self.count = 0

    @event_handler()
    def increment(self, **kwargs):
        self.count += 1

    def get_context_data(self, **kwargs):
        return {"count": self.count}
