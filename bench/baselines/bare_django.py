"""The HTTP floor: Django with one view, no middleware, no database, no templates.

uvicorn bench.baselines.bare_django:application --workers 2
"""

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-baseline-not-a-secret-" + "x" * 40,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
)


def ok(request):
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns = [path("", ok), path("health/live/", ok)]

application = get_asgi_application()
