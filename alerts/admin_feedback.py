"""Operator labels in the admin: read-only, filterable by label, reason and alert type (the raw
material of the model-quality page)."""

from __future__ import annotations

from django.contrib import admin

from alerts.models import AlertLabel


class AlertLabelInline(admin.StackedInline):
    model = AlertLabel
    extra = 0
    can_delete = False
    readonly_fields = ("label", "action", "reason", "by", "by_key", "at")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(AlertLabel)
class AlertLabelAdmin(admin.ModelAdmin):
    list_display = ("alert", "label", "reason", "action", "by", "by_key", "at")
    list_filter = ("label", "reason", "alert__type", "at")
    list_select_related = ("alert", "by")
    readonly_fields = ("alert", "label", "action", "reason", "by", "by_key", "at")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
