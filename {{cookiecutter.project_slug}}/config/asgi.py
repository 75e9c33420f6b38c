"""ASGI entry point: plain HTTP goes to Django, /ws/live/ to djust's LiveView consumer.

The consumer is djust's own with a stricter front door for what anonymous
clients send (core/consumers.py). Each worker warms itself up once the server
has started it, and /health/ says 503 until it has (core/warmup.py).

https://docs.djangoproject.com/en/5.2/howto/deployment/asgi/
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.prod")

# Set up Django (apps, settings) before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from core.consumers import StrictLiveViewConsumer  # noqa: E402
from core.warmup import WarmUpOnStart  # noqa: E402

application = WarmUpOnStart(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # SECURITY WARNING: browsers send cookies with cross-site WebSocket
            # handshakes; only an Origin listed in ALLOWED_HOSTS may connect
            # (djust check A001). The client hard-codes the /ws/live/ path.
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter([path("ws/live/", StrictLiveViewConsumer.as_asgi())]))
            ),
        }
    )
)
