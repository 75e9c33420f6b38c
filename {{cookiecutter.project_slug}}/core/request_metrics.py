"""django-prometheus' request middleware, run on the event loop instead of a thread.

django-prometheus' middleware are written for Django's sync stack. Under ASGI,
Django runs each of their hooks (process_request, process_view,
process_response, ...) through sync_to_async, on the one thread that all
such calls share: four to six thread hops per request, queueing behind each
other under load, only to increase a few counters. Their hooks do no I/O, so
these subclasses call the very same hooks directly from async code. The
figures and their names are django-prometheus' own.
"""

from django_prometheus import middleware


class PrometheusBeforeMiddleware(middleware.PrometheusBeforeMiddleware):
    """Starts the request's clock and counts it; first in MIDDLEWARE."""

    async def __acall__(self, request):
        self.process_request(request)
        response = await self.get_response(request)
        return self.process_response(request, response)


class PrometheusAfterMiddleware(middleware.PrometheusAfterMiddleware):
    """Counts the request by view, method and status, with its latency; last in MIDDLEWARE."""

    async def __acall__(self, request):
        self.process_request(request)
        response = await self.get_response(request)
        return super().process_response(request, response)

    # Django calls these itself, through sync_to_async unless they are coroutines.
    async def process_view(self, request, view_func, *view_args, **view_kwargs):
        return super().process_view(request, view_func, *view_args, **view_kwargs)

    async def process_exception(self, request, exception):
        return super().process_exception(request, exception)

    async def process_template_response(self, request, response):
        return super().process_template_response(request, response)
