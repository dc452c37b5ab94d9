from __future__ import annotations

from django.db import models


class Event(models.Model):
    """A raw event, stored once: the unique event_id makes redelivery harmless.

    The largest table, written on every batch: it keeps only the indexes something reads — event_id
    (the dedup), occurred_at (retention, rebuild order), processed_at (throughput over the last
    minutes) and the entity ids for the admin's exact search (partial: not the blanks). Declared as
    plain indexes and a unique constraint, so PostgreSQL gets no extra `varchar_pattern_ops` copies."""

    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=40)
    occurred_at = models.DateTimeField(db_index=True)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField()
    student_id = models.CharField(max_length=64, blank=True, default="")
    tutor_id = models.CharField(max_length=64, blank=True, default="")
    late = models.BooleanField(default=False, help_text="older than the retention horizon when it arrived")
    payload = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event_id"], name="ingest_event_id_unique")]
        indexes = [
            models.Index(fields=["processed_at"]),
            models.Index(
                fields=["student_id"], name="ingest_event_student", condition=~models.Q(student_id="")
            ),
            models.Index(fields=["tutor_id"], name="ingest_event_tutor", condition=~models.Q(tutor_id="")),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class PendingEvent(models.Model):
    """The `database` stream backend: one row per accepted, not yet processed event."""

    body = models.JSONField()
    enqueued_at = models.DateTimeField(auto_now_add=True)
    claimed_until = models.DateTimeField(null=True, blank=True, db_index=True)
    claimed_by = models.CharField(max_length=100, blank=True, default="")
    deliveries = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"pending #{self.pk}"


class StreamDeadLetter(models.Model):
    """A stream message that could not be processed after its allowed deliveries."""

    backend = models.CharField(max_length=20)
    message_id = models.CharField(max_length=100)
    body = models.JSONField(null=True, blank=True)
    raw = models.TextField(blank=True, default="")
    error = models.TextField()
    deliveries = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    replayed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"dead letter {self.backend}:{self.message_id}"


class SuspectDelivery(models.Model):
    """A stream message delivered before and never settled, while a worker processes it again.

    Written outside the batch's transaction just before the slice it belongs to is processed, and
    removed right after — whatever the outcome — unless the process dies. A message that comes back
    with its row still there was in a slice whose worker died: its slice is split, and one that was
    being processed alone is dead-lettered instead of killing the next worker too (ingest.worker)."""

    backend = models.CharField(max_length=20)
    message_id = models.CharField(max_length=100)
    slice_size = models.PositiveIntegerField(help_text="how many messages were processed together")
    consumer = models.CharField(max_length=200)
    started_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["backend", "message_id"], name="suspect_delivery_unique"),
        ]

    def __str__(self) -> str:
        return f"suspect {self.backend}:{self.message_id} (slice of {self.slice_size})"


# What a key may do (issue 21): send events, read the API, act on alerts (acknowledge, resolve, dismiss).
API_KEY_SCOPES = ("ingest", "read", "act")


def default_api_key_scopes() -> list[str]:
    """Least privilege for a new key: it may send events, nothing else."""
    return ["ingest"]


class ApiKey(models.Model):
    """An API key with its scopes. Only a SHA-256 of the secret is stored; the prefix finds the row."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    rate_limit_per_sec = models.FloatField(
        null=True, blank=True, help_text="overrides INGEST_RATE_LIMIT_PER_SEC for this key"
    )
    scopes = models.JSONField(
        default=default_api_key_scopes,
        help_text="ingest: POST /api/ingest · read: GET /api/… · act: alert acknowledge/resolve/dismiss",
    )

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else "active"
        return f"{self.name} ({self.prefix}…, {state})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class KinesisShard(models.Model):
    """Per-shard checkpoint and lease for the kinesis backend: one owner per shard at a time."""

    stream_name = models.CharField(max_length=128)
    shard_id = models.CharField(max_length=128)
    checkpoint = models.CharField(
        max_length=256, blank=True, default="", help_text="last processed sequence number"
    )
    reads_from_checkpoint = models.PositiveIntegerField(
        default=0,
        help_text="reads that started at the checkpoint since it last moved: the delivery count of the "
        "records after it, kept across restarts (a record that stops the worker cannot loop forever)",
    )
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stream_name", "shard_id"], name="kinesis_shard_unique")
        ]

    def __str__(self) -> str:
        return f"{self.stream_name}/{self.shard_id} @ {self.checkpoint or 'TRIM_HORIZON'}"


class WorkerHeartbeat(models.Model):
    """Each stream consumer writes one row now and then: /healthz and pipeline_status read it."""

    name = models.CharField(max_length=200, unique=True)
    backend = models.CharField(max_length=20)
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    processed = models.BigIntegerField(default=0)
    # Batch durations since the worker started (issue 9): /metrics sums these over all rows into a
    # Prometheus histogram, so every process reports the same figure.
    batches = models.BigIntegerField(default=0)
    batch_seconds_sum = models.FloatField(default=0.0)
    batch_buckets = models.JSONField(default=dict, help_text="{upper bound: cumulative count}")

    def __str__(self) -> str:
        return f"{self.name} ({self.backend})"


class IngestCounter(models.Model):
    """Cluster-wide ingest counters (accepted/rejected events), bumped by each web process in batches."""

    name = models.CharField(max_length=40, unique=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} = {self.value}"
