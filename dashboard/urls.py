from django.urls import path

from dashboard import quality, silence_views, views
from dashboard.embed import embed_view
from dashboard.timezones import profile

urlpatterns = [
    path("alerts/feed", views.feed_page, name="dashboard-feed"),
    path("alerts/<int:alert_id>", views.alert_detail, name="dashboard-alert"),
    path("alerts/group/silence", silence_views.group_silence, name="dashboard-group-silence"),
    path("alerts/<int:alert_id>/snooze", silence_views.alert_snooze, name="dashboard-alert-snooze"),
    path("alerts/<int:alert_id>/silence", silence_views.alert_silence, name="dashboard-alert-silence"),
    path("alerts/<int:alert_id>/<str:action>", views.alert_action, name="dashboard-alert-action"),
    # The link alert messages carry: /entities/{entity_type}/{entity_id} (ids may contain "/" and "|").
    path("entities/<str:entity_type>/<path:entity_id>", views.entity, name="dashboard-entity"),
    path("search", views.search, name="dashboard-search"),
    path("quality", views.staff_required(quality.page), name="dashboard-quality"),
    path("embed/<str:panel>/", embed_view, name="dashboard-embed"),
    path("profile", profile, name="dashboard-profile"),
]
