"""URL routes. /health/ and /health/live/ are answered by core.middleware.HealthCheckMiddleware."""

from django.urls import path

from core.views import CounterView

urlpatterns = [
    path("", CounterView.as_view(), name="counter"),
]
