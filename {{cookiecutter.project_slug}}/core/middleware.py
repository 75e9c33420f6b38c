"""Middleware the production setup needs beyond Django's own."""

import re

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from core import health

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
