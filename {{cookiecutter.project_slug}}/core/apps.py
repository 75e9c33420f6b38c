from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The demo LiveView and the health endpoints."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "core"
