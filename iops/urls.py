from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from dashboard import views as dashboard_views
from ingest import views as ingest_views
from iops import views
from iops.api import api, api_not_found

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("metrics", views.metrics, name="metrics"),
    path("api/ingest", ingest_views.ingest, name="ingest"),
    path("api/", api.urls),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),  # JSON 401/404, never the HTML page
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("", include("dashboard.urls")),
    path("", dashboard_views.index, name="dashboard"),
]
