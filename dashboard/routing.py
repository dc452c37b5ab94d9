from django.urls import path

from dashboard.consumers import DashboardConsumer, EntityConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    # An entity page's socket: the page's own path under /ws (ids percent-encoded, may contain "/").
    path("ws/entities/<str:entity_type>/<path:entity_id>", EntityConsumer.as_asgi()),
]
