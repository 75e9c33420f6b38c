"""URL routes. /health/ and /health/live/ are answered by core.middleware.HealthCheckMiddleware."""

from django.urls import include, path

from core.views import CounterView

urlpatterns = [
    # The demo's other pages (core/urls.py).
    path("", include("core.urls")),
    path("", CounterView.as_view(), name="counter"),
]
