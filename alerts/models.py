from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


SEVERITY_RANK: dict[str, int] = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class Status(models.TextChoices):
    OPEN = "open", "Open"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    RESOLVED = "resolved", "Resolved"
    DISMISSED = "dismissed", "Dismissed"


ACTIVE_STATUSES = (Status.OPEN, Status.ACKNOWLEDGED)


class AlertType(models.TextChoices):
    HIGH_IB_CALL_FREQUENCY = "high_ib_call_frequency", "High IB call frequency"
    LOW_HEALTH_SCORE = "low_health_score", "Low health score"
    SUPPLY_DEMAND_IMBALANCE = "supply_demand_imbalance", "Supply–demand imbalance"
    FIRST_SESSION_FAILED = "first_session_failed", "First session failed"
    VELOCITY_DROP = "velocity_drop", "Session velocity drop"
    TUTOR_OVERLOAD = "tutor_overload", "Tutor overload"
    RATE_ANOMALY = "rate_anomaly", "Rate anomaly"


class EntityType(models.TextChoices):
    STUDENT = "student", "Student"
    TUTOR = "tutor", "Tutor"
    SUBJECT_REGION = "subject_region", "Subject × region"
    GLOBAL = "global", "Global series"


# How a group of alerts names its entities ("23 students: …"), in the feed and in notifications.
ENTITY_PLURALS = {"student": "students", "tutor": "tutors", "subject_region": "subject × region cells"}


class Alert(models.Model):
    fingerprint = models.CharField(max_length=200, help_text="type:entity_type:entity_id")
    type = models.CharField(max_length=40, choices=AlertType.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.OPEN)
    entity_type = models.CharField(max_length=20, choices=EntityType.choices)
    entity_id = models.CharField(max_length=200)
    message = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)
    occurrences = models.PositiveIntegerField(default=1)
    first_seen = models.DateTimeField(db_index=True)
    last_seen = models.DateTimeField(db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The API key that acted through the API, as "name (prefix…)": the key outlives no revocation
    # question this way, and alerts need not import the ingest edge's model.
    # db_default: the rules' bulk INSERTs name only the columns they fill.
    acknowledged_by_key = models.CharField(max_length=140, blank=True, default="", db_default="")
    closed_by_key = models.CharField(max_length=140, blank=True, default="", db_default="")
    dismiss_reason = models.CharField(max_length=500, blank=True, default="")
    clear_since = models.DateTimeField(
        null=True, blank=True, help_text="when the condition was first seen clear again (for auto-resolve)"
    )

    class Meta:
        constraints = [
            # One active alert per (type, entity); repeats raise `occurrences` instead.
            models.UniqueConstraint(
                fields=["fingerprint"],
                condition=Q(status__in=["open", "acknowledged"]),
                name="one_active_alert_per_fingerprint",
            )
        ]
        # Every repeat of an active alert rewrites its row (occurrences, last_seen): each index is one
        # more entry per repeat, so only the indexes a read needs. Status is the composite's prefix;
        # type and severity filter a status-bounded or small set; no LIKE prefix search on any of them.
        indexes = [
            models.Index(fields=["status", "-last_seen"]),
            models.Index(fields=["fingerprint"], name="alert_fingerprint"),
            models.Index(fields=["entity_id"], name="alert_entity_id"),
        ]
        ordering = ["-last_seen"]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.type} {self.entity_type}:{self.entity_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class AlertTransition(models.Model):
    """Every status or severity change: who, when, from, to, why."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="transitions")
    at = models.DateTimeField()
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    by_key = models.CharField(
        max_length=140,
        blank=True,
        default="",
        db_default="",  # the rules' bulk INSERT of "raised" transitions names only its columns
        help_text="the API key that acted: name (prefix…)",
    )
    from_status = models.CharField(max_length=15, blank=True, default="")
    to_status = models.CharField(max_length=15)
    note = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"alert {self.alert_id}: {self.from_status or '∅'} → {self.to_status}"


class RateMinute(models.Model):
    """A minute whose global rates the anomaly detector has evaluated: the row (unique minute) makes the
    evaluation happen once per minute across every worker and process. Pruned after a day."""

    minute = models.DateTimeField(unique=True)

    def __str__(self) -> str:
        return f"rates evaluated for {self.minute:%Y-%m-%d %H:%M}"


# --- notification routing and delivery (issue 5) --------------------------------------------------


def notifier_kind_choices():
    """`NotificationChannel.kind` choices: the notifier registry (alerts/notifiers.py)."""

    from alerts.notifiers import notifier_choices

    return notifier_choices()


class DigestPeriod(models.TextChoices):
    OFF = "off", "Off (one message per alert)"
    HOURLY = "hourly", "Hourly"
    DAILY = "daily", "Daily"


class NotificationChannel(models.Model):
    """Where alerts go. `kind` picks the notifier class; its settings live in `config`."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=notifier_kind_choices)
    min_severity = models.CharField(
        max_length=10,
        choices=Severity.choices,
        default=Severity.WARNING,
        help_text="alerts at this severity or above are sent here",
    )
    alert_types = models.JSONField(
        default=list, blank=True, help_text='alert types to send, e.g. ["low_health_score"]; empty = all'
    )
    enabled = models.BooleanField(default=True)
    config = models.JSONField(default=dict, blank=True)
    # Stored as is: the webhook needs the clear value to sign. Never shown back in the admin.
    secret = models.CharField(max_length=200, blank=True, default="", help_text="webhook signing secret")
    # Issue 19: low-severity alerts gathered into one message per period instead of one each.
    digest = models.CharField(
        max_length=10,
        choices=DigestPeriod.choices,
        default=DigestPeriod.OFF,
        help_text="send alerts up to the digest severity as one message per hour or day (off: one each)",
    )
    digest_max_severity = models.CharField(
        max_length=10,
        choices=Severity.choices,
        default=Severity.INFO,
        help_text="with a digest: alerts at this severity or below wait for it; more severe go at once",
    )
    # The digest run that has this channel's period (claimed by conditional UPDATE): one message a period.
    digest_claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, ≥ {self.min_severity}{'' if self.enabled else ', disabled'})"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from alerts.notifiers import NOTIFIERS

        errors: dict[str, list[str]] = {}
        types = self.alert_types
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            errors["alert_types"] = ["a JSON list of alert type names ([] for all)"]
        else:
            unknown = sorted(set(types) - set(AlertType.values))
            if unknown:
                errors["alert_types"] = [
                    f"unknown alert type(s): {', '.join(unknown)}; known: {', '.join(AlertType.values)}"
                ]
        if not isinstance(self.config, dict):
            errors["config"] = ["a JSON object"]
        cls = NOTIFIERS.get(self.kind)
        if cls is not None and self.enabled and "config" not in errors:
            problems = cls.config_errors(self.config, self.secret)
            if problems:
                errors["config"] = [f"{cls.label} channel is enabled but incomplete: {p}" for p in problems]
        if errors:
            raise ValidationError(errors)

    def wants(self, *, alert_type: str, severity: str) -> bool:
        """Routing: severity at or above the channel's minimum, and one of its types (or all)."""
        if SEVERITY_RANK[Severity(severity)] < SEVERITY_RANK[Severity(self.min_severity)]:
            return False
        return not self.alert_types or alert_type in self.alert_types

    def digest_due(self, *, now: datetime) -> datetime:
        """When the digest of the period `now` falls in goes: the end of this hour or this day (UTC)."""
        start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if self.digest == DigestPeriod.DAILY:
            return start.replace(hour=0) + timedelta(days=1)
        return start + timedelta(hours=1)

    def digests(self, *, severity: str) -> bool:
        """An alert of this severity waits for the channel's digest instead of going at once."""
        return (
            self.digest != DigestPeriod.OFF
            and SEVERITY_RANK[Severity(severity)] <= SEVERITY_RANK[Severity(self.digest_max_severity)]
        )


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    FAILED = "failed", "Failed, retry scheduled"
    SENT = "sent", "Sent"
    DEAD = "dead", "Dead letter"
    # Issue 19: not sent, by design.
    SILENCED = "silenced", "Not sent: silenced"
    DIGEST = "digest", "Waiting for the channel's digest"


class AlertDelivery(models.Model):
    """One alert sent (or being sent) to one channel. The row is the retry state and the audit trail."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    # What triggered it: the alert opening, or escalating to `severity`. One row per (alert, channel,
    # severity), so a redelivered trigger never sends twice.
    trigger = models.CharField(max_length=12, default="opened")
    severity = models.CharField(max_length=10, choices=Severity.choices)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    dead_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True, help_text="last attempt")
    created_at = models.DateTimeField()
    silence = models.ForeignKey(
        "Silence",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="deliveries",
        help_text="the silence that kept this delivery from being sent",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["alert", "channel", "severity"], name="one_delivery_per_trigger")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]
        ordering = ["-id"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"alert {self.alert_id} → channel {self.channel_id}: {self.status} ({self.attempts} attempts)"


class AlertDeadLetter(AlertDelivery):
    """The dead deliveries on their own admin page (same rows as AlertDelivery, status dead)."""

    class Meta:
        proxy = True
        verbose_name = "alert dead letter"
        verbose_name_plural = "alert dead letters"


# --- operator feedback and runtime thresholds (issue 19) ----------------------------------------------


class LabelKind(models.TextChoices):
    ACTED_ON = "acted_on", "Acted on"
    DISMISSED = "dismissed", "Dismissed"


class DismissReason(models.TextChoices):
    FALSE_POSITIVE = "false_positive", "False positive"
    DUPLICATE = "duplicate", "Duplicate"
    KNOWN_ISSUE = "known_issue", "Known issue"
    NOT_ACTIONABLE = "not_actionable", "Not actionable"
    OTHER = "other", "Other"


class AlertLabel(models.Model):
    """What an operator made of an alert: acted on (acknowledged or resolved) or dismissed, with a reason.

    One row per alert, the latest word wins (acknowledged then dismissed is a dismissal). Its insight
    (insights.Insight.alert_id) carries the same label through this row: the model-quality page grades
    each model by the labels of the alerts it scored."""

    alert = models.OneToOneField(Alert, on_delete=models.CASCADE, related_name="label")
    label = models.CharField(max_length=10, choices=LabelKind.choices)
    action = models.CharField(max_length=12)  # acknowledge | resolve | dismiss
    reason = models.CharField(max_length=20, choices=DismissReason.choices, blank=True, default="")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    by_key = models.CharField(
        max_length=140, blank=True, default="", db_default="", help_text="the API key that acted, if any"
    )
    at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"alert {self.alert_id}: {self.label}{why}"


class ThresholdSet(models.Model):
    """The alert thresholds staff changed at runtime (one row, id 1): `values` maps a setting name to its
    value; a name absent from it takes the environment's default. `version` grows with every save, so
    each process reloads the values when it sees a new one (alerts.thresholds)."""

    values = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(null=True, blank=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "alert thresholds"
        verbose_name_plural = "alert thresholds"

    def __str__(self) -> str:
        return f"alert thresholds (version {self.version}, {len(self.values)} changed from the environment)"


class ThresholdChange(models.Model):
    """The audit: who changed which threshold, when, from what to what (null = the environment default)."""

    at = models.DateTimeField(db_index=True)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    name = models.CharField(max_length=60, db_index=True)
    old_value = models.FloatField(null=True, blank=True)
    new_value = models.FloatField(null=True, blank=True)
    version = models.PositiveIntegerField()

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        def show(v):
            return "default" if v is None else f"{v:g}"

        return f"{self.name}: {show(self.old_value)} → {show(self.new_value)}"


# --- silences (issue 19) -------------------------------------------------------------------------


class Silence(models.Model):
    """Mutes notifications of the alerts it matches between starts_at and ends_at (as Alertmanager's
    silences): they are still raised, recorded and shown (muted), but not sent. Every matcher given must
    match; at least one is required. Expired early by setting ends_at; expires by itself at ends_at."""

    alert_type = models.CharField(max_length=40, choices=AlertType.choices, blank=True, default="")
    entity_type = models.CharField(max_length=20, choices=EntityType.choices, blank=True, default="")
    entity_id = models.CharField(max_length=200, blank=True, default="")
    cell = models.CharField(
        max_length=200, blank=True, default="", help_text='a subject × region cell, e.g. "Mathematics|west"'
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(db_index=True)
    reason = models.CharField(max_length=500)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_key = models.CharField(
        max_length=140, blank=True, default="", db_default="", help_text="the API key that made it, if any"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-ends_at", "-id"]

    def __str__(self) -> str:
        return f"silence {self.pk}: {self.matchers_label()} until {self.ends_at:%Y-%m-%d %H:%M}"

    def matchers_label(self) -> str:
        parts = []
        if self.alert_type:
            parts.append(f"type={self.alert_type}")
        if self.entity_type:
            parts.append(f"entity={self.entity_type}:{self.entity_id}")
        if self.cell:
            parts.append(f"cell={self.cell}")
        return ", ".join(parts) or "nothing"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from alerts.silences import silence_errors

        errors: dict[str, list[str]] = {}
        for field, message in silence_errors(self):
            errors.setdefault(field if field != "matchers" else "__all__", []).append(message)
        if errors:
            raise ValidationError(errors)
