"""Runtime alert thresholds in the admin: one form over every threshold (blank = the environment's
default), validated in range and across fields, saved through alerts.thresholds.thresholds_update so
each change is an audit row (who, when, old → new) and a new version every worker picks up."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html_join

from alerts import thresholds
from alerts.models import ThresholdChange, ThresholdSet
from iops.lib.admin import AuditAdmin


def _field(spec: thresholds.Spec) -> forms.Field:
    help_text = f"{spec.help}. Environment default: {thresholds.default(spec.name):g}; leave blank to use it."
    if spec.kind is int:
        return forms.IntegerField(
            required=False,
            min_value=int(spec.minimum),
            max_value=int(spec.maximum),
            label=spec.name,
            help_text=help_text,
        )
    return forms.FloatField(
        required=False, min_value=spec.minimum, max_value=spec.maximum, label=spec.name, help_text=help_text
    )


class _Base(forms.ModelForm):
    class Meta:
        model = ThresholdSet
        fields: list[str] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        stored = self.instance.values if self.instance and self.instance.pk else {}
        for name in thresholds.SPECS:
            if name in self.fields:
                self.fields[name].initial = stored.get(name)

    def overrides(self) -> dict:
        return {name: self.cleaned_data.get(name) for name in thresholds.SPECS}

    def clean(self):
        cleaned = super().clean()
        if not self.errors:
            for name, problems in thresholds.errors_for(self.overrides()).items():
                for problem in problems:
                    self.add_error(name, problem)
        return cleaned


ThresholdSetForm = type(
    "ThresholdSetForm", (_Base,), {name: _field(spec) for name, spec in thresholds.SPECS.items()}
)


@admin.register(ThresholdSet)
class ThresholdSetAdmin(admin.ModelAdmin):
    form = ThresholdSetForm
    readonly_fields = ("version", "updated_at", "updated_by", "recent_changes")
    fieldsets = (
        ("Thresholds (blank = the environment's default)", {"fields": tuple(thresholds.SPECS)}),
        ("Audit", {"fields": readonly_fields}),
    )

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    list_display = ("__str__", "version", "updated_at", "updated_by")

    def changelist_view(self, request, extra_context=None):
        """One set of thresholds, made on first sight: the list shows it, its form edits every value."""
        ThresholdSet.objects.get_or_create(pk=1)
        return super().changelist_view(request, extra_context)

    def save_model(self, request, obj, form, change):
        thresholds.thresholds_update(overrides=form.overrides(), user=request.user, now=timezone.now())
        obj.refresh_from_db()

    @admin.display(description="recent changes")
    def recent_changes(self, obj):
        rows = ThresholdChange.objects.select_related("by")[:10]
        if not rows:
            return "none yet"
        return format_html_join(
            "\n",
            "<div>{} · {} · {}</div>",
            ((r.at.strftime("%Y-%m-%d %H:%M"), r.by.get_username() if r.by else "—", str(r)) for r in rows),
        )


@admin.register(ThresholdChange)
class ThresholdChangeAdmin(AuditAdmin):
    list_display = ("at", "by", "name", "old_value", "new_value", "version")
    list_filter = ("name", "by")
    search_fields = ("name",)
    readonly_fields = ("at", "by", "name", "old_value", "new_value", "version")
