from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.utils import timezone
from django.utils.functional import cached_property

from ingest.keys import api_key_create, api_keys_revoke, key_cache
from ingest.models import (
    API_KEY_SCOPES,
    ApiKey,
    Event,
    KinesisShard,
    PendingEvent,
    StreamDeadLetter,
    SuspectDelivery,
    default_api_key_scopes,
)
from iops.lib.admin import AuditAdmin


class NoCountPaginator(Paginator):
    """The events table is huge: never COUNT(*) it for the changelist."""

    @cached_property
    def count(self):
        return 10_000


@admin.register(Event)
class EventAdmin(AuditAdmin):
    list_display = ("event_id", "event_type", "occurred_at", "received_at", "student_id", "tutor_id", "late")
    list_filter = ("event_type", "late")
    # Case-sensitive exact lookups ("=" would be iexact, which no index serves on 10M rows).
    search_fields = ("event_id__exact", "student_id__exact", "tutor_id__exact")
    date_hierarchy = None
    paginator = NoCountPaginator
    show_full_result_count = False
    ordering = ("-id",)


@admin.register(PendingEvent)
class PendingEventAdmin(admin.ModelAdmin):
    list_display = ("id", "enqueued_at", "claimed_by", "claimed_until", "deliveries")
    readonly_fields = ("body", "enqueued_at", "claimed_by", "claimed_until", "deliveries")
    show_full_result_count = False

    def has_add_permission(self, request):
        return False


@admin.register(SuspectDelivery)
class SuspectDeliveryAdmin(admin.ModelAdmin):
    """Redelivered messages a worker is processing, or was when it died (ingest.worker): a row older
    than a batch's duration marks a message whose worker died with it. Deleting the row gives the
    message a full retry instead of a smaller slice."""

    list_display = ("message_id", "backend", "slice_size", "consumer", "started_at")
    list_filter = ("backend",)
    ordering = ("-started_at",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(StreamDeadLetter)
class StreamDeadLetterAdmin(admin.ModelAdmin):
    list_display = ("message_id", "backend", "created_at", "deliveries", "short_error", "replayed_at")
    list_filter = ("backend", ("replayed_at", admin.EmptyFieldListFilter))
    search_fields = ("message_id", "error")
    # A dead letter is evidence: every column is shown and none is edited (replay is the action).
    readonly_fields = tuple(f.name for f in StreamDeadLetter._meta.concrete_fields if not f.primary_key)
    actions = ["replay"]

    @admin.display(description="error")
    def short_error(self, obj):
        return obj.error[:80]

    @admin.action(description="Replay selected dead letters through the stream")
    def replay(self, request, queryset):
        from ingest.streams import get_stream

        letters = [d for d in queryset.filter(replayed_at__isnull=True) if d.body]
        failed: set[int] = set()
        if letters:
            failed = set(get_stream().publish([d.body for d in letters]))
            replayed = [d.pk for i, d in enumerate(letters) if i not in failed]
            StreamDeadLetter.objects.filter(pk__in=replayed).update(replayed_at=timezone.now())
        self.message_user(
            request,
            f"Replayed {len(letters) - len(failed)} message(s); malformed ones cannot be replayed"
            + (f"; the stream refused {len(failed)}, try again." if failed else "."),
        )


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in API_KEY_SCOPES],
        widget=forms.CheckboxSelectMultiple,
        initial=default_api_key_scopes,
        help_text="ingest: POST /api/ingest · read: GET /api/… · act: acknowledge, resolve, dismiss alerts. "
        "Grant only what the key's user needs.",
    )

    class Meta:
        model = ApiKey
        fields = ("name", "rate_limit_per_sec", "scopes")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "scope_list",
        "created_at",
        "last_used_at",
        "revoked_at",
        "rate_limit_per_sec",
    )
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at", "revoked_at")
    fields = ("name", "scopes", "rate_limit_per_sec", *readonly_fields)
    actions = ["revoke"]

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            key_cache.clear()  # new scopes or rate apply at once in this process (others: within the TTL)
            return
        issued = api_key_create(name=obj.name, rate_limit_per_sec=obj.rate_limit_per_sec, scopes=obj.scopes)
        obj.pk = issued.api_key.pk
        obj.prefix, obj.key_hash, obj.created_at = (
            issued.api_key.prefix,
            issued.api_key.key_hash,
            issued.api_key.created_at,
        )
        self.message_user(request, f"New key (shown once, copy it now): {issued.plaintext}", messages.WARNING)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        n = api_keys_revoke(keys=queryset)
        self.message_user(request, f"Revoked {n} key(s).")


@admin.register(KinesisShard)
class KinesisShardAdmin(admin.ModelAdmin):
    """One row per Kinesis shard: where its consumer is (checkpoint) and who holds it (lease)."""

    list_display = ("stream_name", "shard_id", "checkpoint", "lease_owner", "lease_expires_at", "updated_at")
    list_filter = ("stream_name",)
    search_fields = ("shard_id", "lease_owner")
    readonly_fields = (
        "stream_name",
        "shard_id",
        "checkpoint",
        "lease_owner",
        "lease_expires_at",
        "updated_at",
    )
    actions = ["release_lease"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Release the lease (another consumer takes the shard from its checkpoint)")
    def release_lease(self, request, queryset):
        n = queryset.update(lease_owner="", lease_expires_at=None)
        self.message_user(request, f"Released {n} shard lease(s).")
