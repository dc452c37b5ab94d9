from django.urls import path

from dashboard.consumers import DashboardConsumer, EmbedConsumer, EntityConsumer

websocket_urlpatterns = [
    path("ws/dashboard/", DashboardConsumer.as_asgi()),
    path("ws/embed/<str:panel>/", EmbedConsumer.as_asgi()),  # the signed link's token in ?t=
    # An entity page's socket: the page's own path under /ws (ids percent-encoded, may contain "/").
    path("ws/entities/<str:entity_type>/<path:entity_id>", EntityConsumer.as_asgi()),
]
