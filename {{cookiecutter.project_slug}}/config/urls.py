"""URL routes. /health/ and /health/live/ are answered by core.middleware.HealthCheckMiddleware."""

from django.urls import path

from core.views import ChecklistView, CounterView

# Each LiveView route also appears in the route map djust puts in every page, so
# links between them navigate over the open WebSocket instead of reloading.
urlpatterns = [
    path("", CounterView.as_view(), name="counter"),
    path("checklist/", ChecklistView.as_view(), name="checklist"),
]
