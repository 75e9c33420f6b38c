"""Middleware the production setup needs beyond Django's own."""

import logging
import re
import time

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.utils.deprecation import MiddlewareMixin
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core import health

logger = logging.getLogger(__name__)

HEALTH_ROUTES = {
    "/health/": health.readiness,
    "/health/live/": health.liveness,
}


class HealthCheckMiddleware:
    """Answer /health/ and /health/live/ before host validation and the HTTPS redirect.

    A load balancer probes each instance by its IP address over plain HTTP.
    Further down the stack that probe would get a 400 (the IP is not in
    ALLOWED_HOSTS) or a 301 to HTTPS, and the instance would be marked down.
    """

    async_capable = True
    sync_capable = False

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    async def __call__(self, request):
        view = HEALTH_ROUTES.get(request.path_info)
        if view is None:
            return await self.get_response(request)
        response = await view(request)
        response["Cache-Control"] = "no-store"
        return response


class DependencyUnavailableMiddleware(MiddlewareMixin):
    """Answer 503 (not 500) when a page cannot reach Redis or the database.

    The host itself is fine; what it depends on is not, which is a 503 with a
    Retry-After. Nginx (proxy_next_upstream http_503) and load balancers that
    retry then send the request to another app host, so users of a host cut off
    from its data see no error. A 500 would mean a bug and is never retried.

    Each such failure is one warning line naming the request and the error, not
    a traceback per request: during an outage every request fails the same way.

    After such a failure this worker answers 503 at once, without trying, for
    HOLD_SECONDS. When packets to Redis are dropped rather than refused, each
    attempt waits for REDIS_SOCKET_TIMEOUT, and Django runs sync views one at
    a time per worker: requests queued behind those waits took over 10 s to
    get their 503, past Nginx's proxy_next_upstream_timeout, so users saw it.
    Failing the queue fast lets the proxy retry them on a healthy host at
    once. After the hold, the next request tries the dependency again.
    """

    UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OperationalError, InterfaceError)
    RETRY_AFTER_SECONDS = 5
    HOLD_SECONDS = 2

    def __init__(self, get_response):
        super().__init__(get_response)
        self.failing_until = float("-inf")  # time.monotonic() until which pages get 503 untried

    def process_request(self, request):
        if time.monotonic() < self.failing_until:
            return self.unavailable()
        return None

    def process_exception(self, request, exception):
        if not isinstance(exception, self.UNAVAILABLE):
            return None
        self.failing_until = time.monotonic() + self.HOLD_SECONDS
        logger.warning(
            "503 for %s %s: a dependency is unreachable (%s: %s); "
            "requests in the next %s s get 503 without trying",
            request.method,
            request.path,
            type(exception).__name__,
            exception,
            self.HOLD_SECONDS,
        )
        return self.unavailable()

    def unavailable(self):
        response = HttpResponse(
            "Service temporarily unavailable, try again shortly.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(self.RETRY_AFTER_SECONDS)
        # Django would log this response again as "Service Unavailable: /"; the
        # line above already says it, and why.
        response._has_been_logged = True
        return response


class InlineScriptNonceMiddleware:
    """Put the request's CSP nonce on <script> tags that lack one.

    djust injects inline scripts (route map, handler metadata, client
    configuration) without a nonce. Rather than weaken the policy with
    'unsafe-inline', each such tag in a rendered HTML page gets this
    response's nonce. Only bytes our own templates and djust produced are
    touched: user input is escaped by the template engine, so "<script"
    coming from data never reaches this point as markup.
    """

    TAG = re.compile(rb"<script\b(?![^>]*\bnonce=)", re.IGNORECASE)

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if response.streaming or not content_type.startswith("text/html"):
            return response
        # Reading the nonce makes CSPMiddleware add it to the header it builds next.
        nonce = getattr(request, "csp_nonce", None)
        if nonce is None:
            return response
        replacement = b'<script nonce="' + str(nonce).encode() + b'"'
        response.content = self.TAG.sub(replacement, response.content)
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        return response
