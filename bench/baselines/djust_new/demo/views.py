"""The template's counter page, with its handler in the style `djust new` writes (a plain `def`).

The generated project's CounterView also counts a shared total in Redis; this
baseline has no Redis (the scaffold has none), so it keeps only the page's own count.
"""

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
