"""ASGI entry point: Django for HTTP, Channels for /ws/ (session auth, same origin: scheme, host, port).

POST /api/ingest is served by the lean route in front of Django (ingest/asgi.py, issue #3): the same
validation, auth and stream code without Django's request machinery.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iops.settings")
django_asgi_app = get_asgi_application()  # populate the app registry before importing consumers

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402
from ingest.asgi import IngestRoute  # noqa: E402
from ingest.streams import stream_require_durable  # noqa: E402
from iops.lib import daphne_guard  # noqa: E402
from iops.lib.origin import SameOriginValidator  # noqa: E402

daphne_guard.install()  # body limits, early 401 and read timeouts before daphne reads a body (issue 21)
stream_require_durable()  # a web role must not answer 202 for events a Redis restart would lose

application = ProtocolTypeRouter(
    {
        "http": IngestRoute(django_asgi_app),
        # Same origin = scheme, host and port, as Django's CSRF check (Channels' validator: host only).
        "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
