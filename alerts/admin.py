from django.contrib import admin, messages
from django.utils import timezone

from alerts.models import Alert, AlertTransition
from alerts.services import TransitionNotAllowed, alert_transition
from iops.realtime import publish_alert_change


class TransitionInline(admin.TabularInline):
    model = AlertTransition
    extra = 0
    can_delete = False
    readonly_fields = ("at", "by", "from_status", "to_status", "note")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "severity",
        "type",
        "entity_type",
        "entity_id",
        "status",
        "occurrences",
        "last_seen",
    )
    list_filter = ("severity", "status", "type", "entity_type", "last_seen")
    search_fields = ("=entity_id", "message")
    readonly_fields = [f.name for f in Alert._meta.fields]
    inlines = [TransitionInline]
    actions = ["acknowledge", "resolve"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def _bulk(self, request, queryset, action):
        done = 0
        for alert_id in queryset.values_list("pk", flat=True):
            try:
                alert_transition(alert_id=alert_id, action=action, user=request.user, now=timezone.now())
            except TransitionNotAllowed:
                continue
            publish_alert_change(alert_id)
            done += 1
        self.message_user(request, f"{action.title()}d {done} alert(s).", messages.SUCCESS)

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge(self, request, queryset):
        self._bulk(request, queryset, "acknowledge")

    @admin.action(description="Resolve selected alerts")
    def resolve(self, request, queryset):
        self._bulk(request, queryset, "resolve")
