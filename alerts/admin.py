import secrets

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from alerts.delivery import channel_send_test, deliveries_replay
from alerts.feedback import dismiss_text
from alerts.models import (
    Alert,
    AlertDeadLetter,
    AlertDelivery,
    AlertTransition,
    DeliveryStatus,
    DigestPeriod,
    DismissReason,
    NotificationChannel,
    Severity,
    Silence,
)
from alerts.notifiers import NOTIFIERS, TransportError
from alerts.services import TransitionNotAllowed, alert_transition
from alerts.silences import SNOOZE, silence_alert_ids, silence_expire, silence_state
from iops.lib.realtime import Change, publish_change


class TransitionInline(admin.TabularInline):
    model = AlertTransition
    extra = 0
    can_delete = False
    readonly_fields = ("at", "by", "by_key", "from_status", "to_status", "note")

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
    inlines = [TransitionInline]  # + DeliveryInline, appended below
    actions = ["acknowledge", "resolve", "dismiss"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def _bulk(self, request, queryset, action, reason: str = ""):
        done = skipped = 0
        for alert_id in queryset.values_list("pk", flat=True):
            try:
                alert_transition(
                    alert_id=alert_id, action=action, user=request.user, now=timezone.now(), reason=reason
                )
            except TransitionNotAllowed:
                skipped += 1
                continue
            done += 1
        past = {"acknowledge": "Acknowledged", "resolve": "Resolved", "dismiss": "Dismissed"}[action]
        note = f" ({skipped} skipped: already closed or not in a state that allows it)" if skipped else ""
        self.message_user(request, f"{past} {done} alert(s){note}.", messages.SUCCESS)

    @admin.action(description="Acknowledge selected alerts")
    def acknowledge(self, request, queryset):
        self._bulk(request, queryset, "acknowledge")

    @admin.action(description="Resolve selected alerts")
    def resolve(self, request, queryset):
        self._bulk(request, queryset, "resolve")

    @admin.action(description="Dismiss selected alerts (with a reason)…")
    def dismiss(self, request, queryset):
        """A dismissal needs a reason: an intermediate page asks for it, as delete does for confirmation."""
        form = DismissForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            reason = dismiss_text(reason=form.cleaned_data["reason"], note=form.cleaned_data["note"])
            self._bulk(request, queryset, "dismiss", reason=reason)
            return None
        return TemplateResponse(
            request,
            "admin/alerts/alert/dismiss_selected.html",
            {
                **self.admin_site.each_context(request),
                "title": "Dismiss alerts",
                "opts": self.model._meta,
                "alerts": queryset.order_by("-last_seen")[:200],
                "count": queryset.count(),
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "selected": queryset.values_list("pk", flat=True),
            },
        )


class DismissForm(forms.Form):
    reason = forms.ChoiceField(
        choices=[("", "---------"), *DismissReason.choices],
        help_text="Recorded on every dismissed alert (who, when, why) and counted on the model-quality "
        "page. A dismissed alert is not raised again during the cooldown.",
    )
    note = forms.CharField(
        max_length=400, required=False, strip=True, widget=forms.Textarea(attrs={"rows": 2, "cols": 60})
    )


# --- notification channels, deliveries and dead letters (issue 5) ------------------------------------


class DeliveryInline(admin.TabularInline):
    model = AlertDelivery
    extra = 0
    can_delete = False
    fields = ("channel", "trigger", "severity", "status", "attempts", "sent_at", "last_error")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


AlertAdmin.inlines = [*AlertAdmin.inlines, DeliveryInline]


class NotificationChannelForm(forms.ModelForm):
    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook signing secret (≥ 16 characters). Never shown back; leave blank to keep the "
        "current one. Stored in the database: anyone with database access can read it.",
    )
    generate_secret = forms.BooleanField(
        required=False, help_text="Generate a new random secret (shown once after saving)."
    )

    class Meta:
        model = NotificationChannel
        fields = (
            "name",
            "kind",
            "enabled",
            "min_severity",
            "alert_types",
            "digest",
            "digest_max_severity",
            "config",
            "secret",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generated_secret = ""
        self.fields["config"].help_text = "; ".join(
            f"{cls.label}: {cls.config_help}" for cls in NOTIFIERS.values()
        )
        for name in ("digest", "digest_max_severity"):
            self.fields[name].required = False
        if self.instance.pk and self.instance.secret:
            self.fields["secret"].help_text = "A secret is set. " + self.fields["secret"].help_text

    def clean_digest(self):
        return self.cleaned_data.get("digest") or DigestPeriod.OFF  # absent: today's behaviour

    def clean_digest_max_severity(self):
        return self.cleaned_data.get("digest_max_severity") or Severity.INFO

    def clean_secret(self):
        return self.cleaned_data.get("secret") or (self.instance.secret if self.instance.pk else "")

    def clean(self):
        cleaned = super().clean() or {}
        if cleaned.get("generate_secret"):
            self.generated_secret = secrets.token_urlsafe(32)
            cleaned["secret"] = self.generated_secret
        return cleaned


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    form = NotificationChannelForm
    list_display = ("name", "kind", "enabled", "min_severity", "types", "digest", "secret_set", "updated_at")
    list_filter = ("kind", "enabled", "min_severity", "digest")
    search_fields = ("name",)
    actions = ["send_test", "enable", "disable"]

    @admin.display(description="alert types")
    def types(self, obj):
        return ", ".join(obj.alert_types) if obj.alert_types else "all"

    @admin.display(description="secret", boolean=True)
    def secret_set(self, obj):
        return bool(obj.secret)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if getattr(form, "generated_secret", ""):
            self.message_user(
                request,
                f"New signing secret for {obj.name}: {form.generated_secret} — copy it now, "
                "it is not shown again.",
                messages.WARNING,
            )

    @admin.action(description="Send a test alert through the selected channels")
    def send_test(self, request, queryset):
        for channel in queryset:
            try:
                channel_send_test(channel=channel, now=timezone.now())
            except TransportError as exc:
                self.message_user(request, f"{channel.name}: test failed: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"{channel.name}: test alert sent.", messages.SUCCESS)

    @admin.action(description="Enable selected channels")
    def enable(self, request, queryset):
        refused, enabled = [], 0
        for channel in queryset.filter(enabled=False):
            channel.enabled = True
            try:
                channel.full_clean()
            except ValidationError:
                refused.append(channel.name)
                continue
            channel.save(update_fields=["enabled", "updated_at"])
            enabled += 1
        self.message_user(request, f"Enabled {enabled} channel(s).", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"Not enabled (incomplete config): {', '.join(refused)}", messages.ERROR
            )

    @admin.action(description="Disable selected channels")
    def disable(self, request, queryset):
        queryset.update(enabled=False, updated_at=timezone.now())


class _DeliveryAdminBase(admin.ModelAdmin):
    list_display = (
        "id",
        "alert_link",
        "channel",
        "trigger",
        "severity",
        "status",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "duration_ms",
        "short_error",
    )
    list_filter = ["status", "channel__kind", "channel", "trigger", "severity", "created_at"]
    search_fields = ("=alert__id", "=alert__entity_id", "channel__name", "last_error")
    list_select_related = ("alert", "channel")
    readonly_fields = [f.name for f in AlertDelivery._meta.fields]
    actions = ["replay"]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="alert", ordering="alert_id")
    def alert_link(self, obj):
        url = reverse("admin:alerts_alert_change", args=[obj.alert_id])
        return format_html('<a href="{}">{}</a>', url, obj.alert)

    @admin.display(description="last error")
    def short_error(self, obj):
        return obj.last_error[:100]

    def has_replay_permission(self, request):
        # The rows are read-only in the admin; replaying them is what "change" means here.
        return request.user.has_perm("alerts.change_alertdelivery")

    @admin.action(description="Replay selected (dead or failing) deliveries now", permissions=["replay"])
    def replay(self, request, queryset):
        count = deliveries_replay(delivery_ids=queryset.values_list("pk", flat=True), now=timezone.now())
        self.message_user(
            request, f"Replaying {count} delivery(ies); they are sent within seconds.", messages.SUCCESS
        )


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(_DeliveryAdminBase):
    pass


@admin.register(AlertDeadLetter)
class AlertDeadLetterAdmin(_DeliveryAdminBase):
    list_filter = ["channel__kind", "channel", "severity", "dead_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status=DeliveryStatus.DEAD)


from alerts import admin_thresholds  # noqa: E402, F401 - registers the runtime thresholds' admin
from alerts.admin_feedback import AlertLabelInline  # noqa: E402

AlertAdmin.inlines = [*AlertAdmin.inlines, AlertLabelInline]


# --- silences (issue 19) ----------------------------------------------------------------------------


def _publish(silence: Silence) -> None:
    """Open dashboards re-render the rows a silence mutes (or no longer mutes)."""
    ids = silence_alert_ids(silence)
    if ids:
        publish_change(Change(alerts_updated=ids))


class SilenceStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("pending", "Not started yet"), ("expired", "Expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(starts_at__lte=now, ends_at__gt=now)
        if self.value() == "pending":
            return queryset.filter(starts_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(ends_at__lte=now)
        return queryset


@admin.register(Silence)
class SilenceAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "matchers",
        "starts_at",
        "ends_at",
        "state",
        "reason",
        "created_by",
        "created_by_key",
        "muted_deliveries",
    )
    list_filter = (SilenceStateFilter, "alert_type", "entity_type", "ends_at")
    search_fields = ("=entity_id", "cell", "reason")
    fields = ("alert_type", "entity_type", "entity_id", "cell", "starts_at", "ends_at", "reason")
    list_select_related = ("created_by",)
    actions = ["expire_now"]

    @admin.display(description="matches")
    def matchers(self, obj):
        return obj.matchers_label()

    @admin.display(description="state")
    def state(self, obj):
        return silence_state(obj, now=timezone.now())

    @admin.display(description="deliveries held back")
    def muted_deliveries(self, obj):
        url = reverse("admin:alerts_alertdelivery_changelist") + f"?silence__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj.deliveries.count())

    def get_changeform_initial_data(self, request):
        now = timezone.now().replace(second=0, microsecond=0)
        initial = {"starts_at": now, "ends_at": now + SNOOZE}
        return {**initial, **super().get_changeform_initial_data(request)}

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
            obj.created_at = timezone.now()
        super().save_model(request, obj, form, change)
        _publish(obj)

    @admin.action(description="Expire selected silences now")
    def expire_now(self, request, queryset):
        now = timezone.now()
        expired = [silence_expire(silence=s, now=now) for s in queryset.filter(ends_at__gt=now)]
        for silence in expired:
            _publish(silence)
        self.message_user(request, f"Expired {len(expired)} silence(s).", messages.SUCCESS)
