from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The demo LiveView, the health endpoints and the metrics."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "core"

    def ready(self):
        from core import metrics

        metrics.install()
