from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Severity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


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


class Alert(models.Model):
    fingerprint = models.CharField(max_length=200, db_index=True, help_text="type:entity_type:entity_id")
    type = models.CharField(max_length=40, choices=AlertType.choices, db_index=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, db_index=True)
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.OPEN, db_index=True)
    entity_type = models.CharField(max_length=20, choices=EntityType.choices)
    entity_id = models.CharField(max_length=200, db_index=True)
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
        indexes = [models.Index(fields=["status", "-last_seen"])]
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
    from_status = models.CharField(max_length=15, blank=True, default="")
    to_status = models.CharField(max_length=15)
    note = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"alert {self.alert_id}: {self.from_status or '∅'} → {self.to_status}"
