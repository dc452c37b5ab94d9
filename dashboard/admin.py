"""The admin as an ops tool: site branding, and registrations for every model its own app left out.

`dashboard` is the last project app in INSTALLED_APPS, so by the time this module is imported each
app has registered what it wants; here only the gaps are filled (an app that later registers a
model itself wins, nothing is registered twice).
"""

from __future__ import annotations

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.db import models
from django.utils.html import format_html

from dashboard.models import Profile
from dashboard.templatetags.dashboard import entity_path
from iops.lib.admin import ReadOnlyAdmin

admin.site.site_header = "IOps operations"
admin.site.site_title = "IOps admin"
admin.site.index_title = "Operations data"
admin.site.site_url = "/"

PROJECT_APPS = ("ingest", "metrics", "alerts", "insights")


class InsightAdmin(ReadOnlyAdmin):
    list_display = ("entity_type", "entity_id", "level", "risk", "model", "alert_id", "scored_at", "page")
    list_filter = ("level", "entity_type", "model", "scored_at")
    search_fields = ("=entity_id", "=alert_id")
    ordering = ("-scored_at",)
    date_hierarchy = "scored_at"

    @admin.display(description="dashboard")
    def page(self, obj):
        return format_html('<a href="{}">open</a>', entity_path(obj.entity_type, obj.entity_id))


class AlertTransitionAdmin(ReadOnlyAdmin):
    list_display = ("alert", "at", "from_status", "to_status", "by", "by_key", "note")
    list_filter = ("to_status", "from_status", "at")
    search_fields = ("=alert__id", "=alert__entity_id", "note", "by_key")
    list_select_related = ("alert", "by")
    ordering = ("-at",)


class KinesisShardAdmin(ReadOnlyAdmin):
    list_display = ("stream_name", "shard_id", "checkpoint", "lease_owner", "lease_expires_at", "updated_at")
    list_filter = ("stream_name",)
    search_fields = ("shard_id", "lease_owner")


class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ("name", "backend", "started_at", "last_seen", "processed")
    list_filter = ("backend",)
    search_fields = ("name",)
    ordering = ("-last_seen",)


class LogEntryAdmin(ReadOnlyAdmin):
    """Who changed what in the admin (Django records it; ops can read it here)."""

    list_display = ("action_time", "user", "content_type", "object_repr", "action_flag", "change_message")
    list_filter = ("action_flag", "content_type", "action_time")
    search_fields = ("object_repr", "user__username")
    list_select_related = ("user", "content_type")
    ordering = ("-action_time",)

    def has_delete_permission(self, request, obj=None):
        return False


SPECIFIC = {
    "insights.Insight": InsightAdmin,
    "alerts.AlertTransition": AlertTransitionAdmin,
    "ingest.KinesisShard": KinesisShardAdmin,
    "ingest.WorkerHeartbeat": WorkerHeartbeatAdmin,
    "admin.LogEntry": LogEntryAdmin,
}


def generic_admin(model: type[models.Model]) -> type[admin.ModelAdmin]:
    """A read-only changelist for a model nobody registered: its first columns, choice/bool/date
    filters, exact search on id-like columns."""
    fields = [
        f for f in model._meta.concrete_fields if not isinstance(f, models.JSONField | models.TextField)
    ]
    filters = [
        f.name
        for f in fields
        if f.choices or isinstance(f, models.BooleanField | models.DateTimeField) and not f.primary_key
    ][:5]
    search = [f"={f.name}" for f in fields if f.name.endswith("_id") and isinstance(f, models.CharField)]
    return type(
        f"{model.__name__}Admin",
        (ReadOnlyAdmin,),
        {"list_display": [f.name for f in fields][:8], "list_filter": filters, "search_fields": search},
    )


def register_gaps() -> list[str]:
    added = []
    candidates: list[type[models.Model]] = [LogEntry]
    for app in PROJECT_APPS:
        candidates += list(apps.get_app_config(app).get_models())
    for model in candidates:
        if admin.site.is_registered(model):
            continue
        admin.site.register(model, SPECIFIC.get(model._meta.label) or generic_admin(model))
        added.append(model._meta.label)
    return added


register_gaps()


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "time_zone")
    search_fields = ("user__username",)
    list_select_related = ("user",)
