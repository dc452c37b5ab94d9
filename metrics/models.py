"""Buckets (additive, by event hour) and snapshots (derived, recomputed for touched entities)."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Sum


class Session(models.Model):
    """One row per session_id: a session counts once, whichever of its events arrive (and twice)."""

    session_id = models.CharField(max_length=64, unique=True)
    student_id = models.CharField(max_length=64, db_index=True)
    tutor_id = models.CharField(max_length=64, db_index=True)
    subject = models.CharField(max_length=100, blank=True, default="")
    session_type = models.CharField(max_length=20, blank=True, default="")
    started_at = models.DateTimeField(null=True, blank=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    duration_minutes = models.PositiveIntegerField(null=True, blank=True)
    completed_successfully = models.BooleanField(null=True, blank=True)
    student_rating = models.PositiveSmallIntegerField(null=True, blank=True)
    tutor_rating = models.PositiveSmallIntegerField(null=True, blank=True)
    # The winning start/completion is the earliest by (event time, event_id): arrival order cannot matter.
    started_event_id = models.CharField(max_length=64, blank=True, default="")
    completed_event_id = models.CharField(max_length=64, blank=True, default="")

    def __str__(self) -> str:
        return f"{self.session_id} ({self.student_id} with {self.tutor_id})"


class HourBucket(models.Model):
    """An hour bucket of a student's or a tutor's sessions: the fold adds each session's start, completion,
    rating and minutes in the hour of the event."""

    hour = models.DateTimeField()
    sessions_started = models.IntegerField(default=0)
    sessions_completed = models.IntegerField(default=0)
    sessions_unsuccessful = models.IntegerField(default=0)
    rating_sum = models.IntegerField(default=0)
    rating_count = models.IntegerField(default=0)
    minutes = models.IntegerField(default=0)

    class Meta:
        abstract = True


class StudentHourly(HourBucket):
    student_id = models.CharField(max_length=64)
    ib_calls = models.IntegerField(default=0)
    ib_unresolved = models.IntegerField(default=0)
    ib_high_priority = models.IntegerField(default=0)
    ib_scheduling_issue = models.IntegerField(default=0)
    ib_technical_problem = models.IntegerField(default=0)
    ib_tutor_concern = models.IntegerField(default=0)
    ib_billing_question = models.IntegerField(default=0)
    ib_general_inquiry = models.IntegerField(default=0)
    ib_other = models.IntegerField(default=0)
    # The platform's health readings in the hour, their sum in hundredths of a point (integers: the sum
    # is exact whatever the order events are folded in, so a rebuild equals live processing) and count;
    # a new reading is compared with the mean of the student's readings from 8 to 30 days ago.
    health_sum = models.BigIntegerField(default=0)
    health_count = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["student_id", "hour"], name="student_hourly_unique")]
        # (hour, student_id): "distinct active students since T" is an index-only scan on the dashboard.
        indexes = [models.Index(fields=["hour", "student_id"], name="student_hourly_hour_student")]

    def __str__(self) -> str:
        return f"{self.student_id} @ {self.hour:%Y-%m-%d %H:00}"


class TutorHourly(HourBucket):
    tutor_id = models.CharField(max_length=64)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tutor_id", "hour"], name="tutor_hourly_unique")]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.tutor_id} @ {self.hour:%Y-%m-%d %H:00}"


# Rows a minute of the global series may have: each batch adds to one shard's row, so concurrent
# batches rarely wait on each other's row lock; readers sum a minute's rows (`per_minute`).
GLOBAL_MINUTE_SHARDS = 8


class GlobalMinuteQuerySet(models.QuerySet["GlobalMinute"]):
    def per_minute(self, *columns: str) -> models.QuerySet[GlobalMinute, tuple[Any, ...]]:
        """(minute, *sums of `columns`) per minute, oldest first: a minute's shard rows added up."""
        sums = {f"sum_{c}": Sum(c) for c in columns}
        return (
            self.order_by().values("minute").annotate(**sums).order_by("minute").values_list("minute", *sums)
        )


class GlobalMinute(models.Model):
    """Global per-minute series. `received` counts by arrival minute; the rest by event minute. A minute
    has up to GLOBAL_MINUTE_SHARDS rows (the batches that wrote it, by shard): its figures are their sums."""

    minute = models.DateTimeField()
    shard = models.PositiveSmallIntegerField(default=0)
    received = models.IntegerField(default=0)
    events = models.IntegerField(default=0)
    sessions_started = models.IntegerField(default=0)
    sessions_completed = models.IntegerField(default=0)
    sessions_unsuccessful = models.IntegerField(default=0)
    ib_calls = models.IntegerField(default=0)

    objects = GlobalMinuteQuerySet.as_manager()

    class Meta:
        # (minute, shard): also the index of every reader's minute range scan.
        constraints = [models.UniqueConstraint(fields=["minute", "shard"], name="global_minute_unique")]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} #{self.shard}"


class StudentSnapshot(models.Model):
    student_id = models.CharField(max_length=64, unique=True)
    sessions_7d = models.IntegerField(default=0)
    sessions_14d = models.IntegerField(default=0)
    sessions_30d = models.IntegerField(default=0)
    sessions_started_7d = models.IntegerField(default=0)
    sessions_started_30d = models.IntegerField(default=0)
    unsuccessful_30d = models.IntegerField(default=0)
    ib_calls_7d = models.IntegerField(default=0)
    ib_calls_14d = models.IntegerField(default=0)
    ib_calls_30d = models.IntegerField(default=0)
    ib_unresolved_14d = models.IntegerField(default=0)
    ib_high_priority_14d = models.IntegerField(default=0)
    ib_reasons_14d = models.JSONField(default=dict, blank=True)
    avg_rating_given = models.FloatField(null=True, blank=True)
    rated_sessions_30d = models.IntegerField(default=0)
    first_session_at = models.DateTimeField(null=True, blank=True)
    first_session_ok = models.BooleanField(null=True, blank=True)
    first_session_id = models.CharField(max_length=64, blank=True, default="")
    last_session_at = models.DateTimeField(null=True, blank=True)
    days_since_last_session = models.FloatField(null=True, blank=True)
    prior_weekly_mean = models.FloatField(default=0)
    velocity = models.FloatField(null=True, blank=True)
    velocity_trend = models.CharField(max_length=10, blank=True, default="")
    platform_health_score = models.FloatField(null=True, blank=True)
    platform_churn_risk = models.CharField(max_length=10, blank=True, default="")
    platform_reported_at = models.DateTimeField(null=True, blank=True)
    platform_event_id = models.CharField(max_length=64, blank=True, default="")
    platform_health_baseline = models.FloatField(
        null=True, blank=True, help_text="mean of the student's platform readings 8 to 30 days ago"
    )
    observed_since = models.DateTimeField(
        null=True, blank=True, help_text="first activity seen in the 30-day window (the history we judge by)"
    )
    # Our score (metrics/health.py); null = not enough data yet to judge the student.
    health_score = models.FloatField(null=True, blank=True, db_index=True)
    health_components = models.JSONField(default=dict, blank=True)
    as_of = models.DateTimeField(help_text="the time the windows were computed for")
    # Not indexed: every refresh writes it, and an index on it makes each update a non-HOT one (only
    # the lists' "updated_at" orders read it, a sort of the table as for their other orders).
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"student {self.student_id}"


class TutorSnapshot(models.Model):
    tutor_id = models.CharField(max_length=64, unique=True)
    sessions_7d = models.IntegerField(default=0)
    sessions_14d = models.IntegerField(default=0)
    sessions_30d = models.IntegerField(default=0)
    sessions_started_30d = models.IntegerField(default=0)
    unsuccessful_30d = models.IntegerField(default=0)
    avg_rating = models.FloatField(null=True, blank=True)
    rated_sessions = models.IntegerField(default=0)
    completion_rate = models.FloatField(null=True, blank=True)
    hours_taught_7d = models.FloatField(default=0)
    available_hours = models.FloatField(null=True, blank=True)
    utilisation = models.FloatField(null=True, blank=True)
    subjects = models.JSONField(default=list, blank=True)
    timezone = models.CharField(max_length=100, blank=True, default="")
    accepts_instant_book = models.BooleanField(null=True, blank=True)
    availability_reported_at = models.DateTimeField(null=True, blank=True)
    availability_event_id = models.CharField(max_length=64, blank=True, default="")
    region = models.CharField(max_length=100, blank=True, default="", help_text="from the timezone")
    prior_weekly_mean = models.FloatField(default=0)
    avg_rating_7d = models.FloatField(null=True, blank=True)
    avg_rating_prior = models.FloatField(null=True, blank=True, help_text="mean rating, days 8-30")
    burnout_risk = models.FloatField(null=True, blank=True, db_index=True, help_text="0-1")
    burnout_components = models.JSONField(default=dict, blank=True)
    as_of = models.DateTimeField()
    # Not indexed: every refresh writes it, and an index on it makes each update a non-HOT one (only
    # the lists' "updated_at" orders read it, a sort of the table as for their other orders).
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"tutor {self.tutor_id}"


class SubjectRegionSnapshot(models.Model):
    subject = models.CharField(max_length=100)
    region = models.CharField(max_length=100)
    platform_available_tutors = models.IntegerField(null=True, blank=True)
    platform_active_students = models.IntegerField(null=True, blank=True)
    platform_demand_score = models.FloatField(null=True, blank=True)
    platform_supply_score = models.FloatField(null=True, blank=True)
    platform_balance_status = models.CharField(max_length=20, blank=True, default="")
    reported_at = models.DateTimeField(null=True, blank=True)
    report_event_id = models.CharField(max_length=64, blank=True, default="")
    # Drives balance_status (hysteresis): (platform demand + 1) / (platform supply + 1).
    demand_supply_ratio = models.FloatField(null=True, blank=True)
    balance_status = models.CharField(max_length=20, default="balanced")
    status_since = models.DateTimeField(null=True, blank=True)
    # Our own figures from our data (sessions and tutor availability), see docs/metrics-and-alerts.md.
    active_students = models.IntegerField(default=0, help_text="distinct students with a session in 7 days")
    available_tutors = models.IntegerField(default=0, help_text="tutors offering the subject with hours > 0")
    available_hours = models.FloatField(default=0)
    sessions_7d = models.IntegerField(default=0)
    own_ratio = models.FloatField(null=True, blank=True, help_text="our demand/supply ratio")
    own_as_of = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subject", "region"], name="subject_region_unique")]

    def __str__(self) -> str:
        return f"{self.subject} / {self.region}"


class SupplyDemandReading(models.Model):
    """Every platform supply–demand reading: balance status is a fold over them in event-time order,
    so a late reading is replayed into place instead of skipped (rebuild == incremental)."""

    event_id = models.CharField(max_length=64, unique=True)
    subject = models.CharField(max_length=100)
    region = models.CharField(max_length=100)
    reported_at = models.DateTimeField()
    demand_score = models.FloatField(null=True, blank=True)
    supply_score = models.FloatField(null=True, blank=True)
    available_tutors = models.IntegerField(null=True, blank=True)
    active_students = models.IntegerField(null=True, blank=True)
    balance_status = models.CharField(max_length=20, blank=True, default="")
    # The cell's hysteresis state right after this reading (in event-time order), so a late reading
    # replays from the reading before it, not from the cell's first ("" = not yet computed).
    fold_status = models.CharField(max_length=20, blank=True, default="")
    fold_since = models.DateTimeField(null=True, blank=True)
    fold_ratio = models.FloatField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["subject", "region", "reported_at"])]

    def __str__(self) -> str:
        return f"{self.subject} / {self.region} @ {self.reported_at:%Y-%m-%d %H:%M}"


class StudentSessionFacts(models.Model):
    """A student's first and last completed session, kept as sessions complete (a monotone fold: the
    first only moves earlier, the last later), so a snapshot refresh reads one row instead of scanning
    the student's sessions. Snapshots show them as of their `as_of` (a completion after it waits)."""

    student_id = models.CharField(max_length=64, unique=True)
    first_completed_at = models.DateTimeField(null=True, blank=True)
    first_session_id = models.CharField(max_length=64, blank=True, default="")
    first_ok = models.BooleanField(null=True, blank=True)
    last_completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "student session facts"

    def __str__(self) -> str:
        return f"session facts of {self.student_id}"
