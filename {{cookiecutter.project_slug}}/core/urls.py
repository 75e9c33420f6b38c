"""Routes of the core app's pages; config/urls.py includes them.

Each LiveView route also appears in the route map djust puts in every page, so
links between LiveViews navigate over the open WebSocket instead of reloading.
"""

from django.urls import path

from core.views import ChecklistView

urlpatterns = [
    path("checklist/", ChecklistView.as_view(), name="checklist"),
]
