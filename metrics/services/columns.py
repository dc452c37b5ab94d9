"""The value columns, named once: what the fold adds to buckets, which window sums a refresh reads, the
snapshot columns it writes, and the values a snapshot row is created with."""

from __future__ import annotations

from typing import Any

from metrics.models import StudentSnapshot, TutorSnapshot
from metrics.services.db import SnapshotTable
from metrics.vocabulary import IB_REASONS, IB_VALUES, SESSION_COUNTS, SESSION_VALUES

# Bucket columns (StudentHourly, TutorHourly, GlobalMinute; defined in metrics.vocabulary): the fold adds to them.
HEALTH_VALUES = ["health_sum", "health_count"]
STUDENT_VALUES = SESSION_VALUES + IB_VALUES + HEALTH_VALUES
MINUTE_VALUES = ["received", "events", *SESSION_COUNTS, "ib_calls"]


def _windows(name: str, column: str, *days: int) -> dict[str, tuple[str, int]]:
    """`{name}_{days}d` -> (bucket column, days) for each window length."""
    return {f"{name}_{d}d": (column, d) for d in days}


# Window sums a refresh reads: name -> (bucket column, days), over hour buckets up to `now`.
_SESSION_WINDOWS = {
    **_windows("sessions", "sessions_completed", 7, 14, 30, 28),
    **_windows("sessions_started", "sessions_started", 30),
    **_windows("unsuccessful", "sessions_unsuccessful", 30),
    **_windows("rating_sum", "rating_sum", 30),
    **_windows("rating_count", "rating_count", 30),
}
IB_REASON_WINDOWS = {r: f"ib_{r}_14d" for r in IB_REASONS}  # reason -> its window's name
STUDENT_WINDOWS = {
    **_SESSION_WINDOWS,
    **_windows("sessions_started", "sessions_started", 7),
    **_windows("ib_calls", "ib_calls", 7, 14, 30),
    **_windows("ib_unresolved", "ib_unresolved", 14),
    **_windows("ib_high_priority", "ib_high_priority", 14),
    **{name: (f"ib_{r}", 14) for r, name in IB_REASON_WINDOWS.items()},
    **_windows("health_sum", "health_sum", 30, 7),
    **_windows("health_count", "health_count", 30, 7),
}
TUTOR_WINDOWS = {
    **_SESSION_WINDOWS,
    **_windows("rating_sum", "rating_sum", 7),
    **_windows("rating_count", "rating_count", 7),
    **_windows("minutes", "minutes", 7),
}

# Snapshot counters a refresh writes (0 in a row created before its first refresh).
_STUDENT_COUNTS = [
    "sessions_7d",
    "sessions_14d",
    "sessions_30d",
    "sessions_started_7d",
    "sessions_started_30d",
    "unsuccessful_30d",
    "ib_calls_7d",
    "ib_calls_14d",
    "ib_calls_30d",
    "ib_unresolved_14d",
    "ib_high_priority_14d",
    "rated_sessions_30d",
]
_TUTOR_COUNTS = [
    "sessions_7d",
    "sessions_14d",
    "sessions_30d",
    "sessions_started_30d",
    "unsuccessful_30d",
    "rated_sessions",
]
_STAMPS = ["as_of", "updated_at"]

# The snapshot columns a refresh writes.
STUDENT_REFRESH_FIELDS = [
    *_STUDENT_COUNTS,
    "ib_reasons_14d",
    "avg_rating_given",
    "prior_weekly_mean",
    "velocity",
    "velocity_trend",
    "last_session_at",
    "days_since_last_session",
    "first_session_at",
    "first_session_id",
    "first_session_ok",
    "platform_health_baseline",
    "observed_since",
    "health_components",
    "health_score",
    *_STAMPS,
]
TUTOR_REFRESH_FIELDS = [
    *_TUTOR_COUNTS,
    "avg_rating",
    "completion_rate",
    "hours_taught_7d",
    "utilisation",
    "avg_rating_7d",
    "avg_rating_prior",
    "prior_weekly_mean",
    "burnout_components",
    "burnout_risk",
    *_STAMPS,
]

# Every NOT NULL column without a database default, for a snapshot row inserted by any upsert.
STUDENT_INSERT: dict[str, Any] = {
    "ib_reasons_14d": "{}",
    "health_components": "{}",
    "prior_weekly_mean": 0.0,
    "velocity_trend": "",
    "platform_churn_risk": "",
    "platform_event_id": "",
    "first_session_id": "",
    **dict.fromkeys(_STUDENT_COUNTS, 0),
}
TUTOR_INSERT: dict[str, Any] = {
    "subjects": "[]",
    "timezone": "",
    "availability_event_id": "",
    "region": "",
    "burnout_components": "{}",
    "prior_weekly_mean": 0.0,
    "hours_taught_7d": 0.0,
    **dict.fromkeys(_TUTOR_COUNTS, 0),
}
STUDENT_TABLE = SnapshotTable(StudentSnapshot, "student_id", STUDENT_INSERT)
TUTOR_TABLE = SnapshotTable(TutorSnapshot, "tutor_id", TUTOR_INSERT)

# A subject × region row before its first reading or refresh.
CELL_INSERT: dict[str, Any] = {
    "platform_balance_status": "",
    "report_event_id": "",
    "balance_status": "balanced",
    "active_students": 0,
    "available_tutors": 0,
    "available_hours": 0.0,
    "sessions_7d": 0,
}
