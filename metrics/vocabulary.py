"""The domain's shared words, defined once: IB call reasons, the subject × region key, the hourly
buckets' counters and the orders the entity lists accept.

Everything above metrics (ingest's schemas, alerts, insights, the dashboard, the simulator) imports these
instead of spelling them again.
"""

from __future__ import annotations

from typing import Literal, get_args

IbReason = Literal[
    "scheduling_issue",
    "technical_problem",
    "tutor_concern",
    "billing_question",
    "general_inquiry",
    "other",
]
IB_REASONS: tuple[str, ...] = get_args(IbReason)

CELL_SEPARATOR = "|"


def cell_key(subject: str, region: str) -> str:
    """The public id of a subject × region cell: "Mathematics|west" (url-quote it in a path)."""
    return f"{subject}{CELL_SEPARATOR}{region}"


def cell_parse(entity_id: str) -> tuple[str, str] | None:
    """(subject, region) of a cell key, or None when the id is not one (no separator or no subject)."""
    subject, sep, region = entity_id.rpartition(CELL_SEPARATOR)
    if not sep or not subject:
        return None
    return subject, region


# The counters of an hourly bucket (student and tutor alike), and the student's IB counters on top.
SESSION_COUNTS = ["sessions_started", "sessions_completed", "sessions_unsuccessful"]
SESSION_VALUES = [*SESSION_COUNTS, "rating_sum", "rating_count", "minutes"]
IB_VALUES = ["ib_calls", "ib_unresolved", "ib_high_priority", *[f"ib_{r}" for r in IB_REASONS]]

# The orders the entity lists accept (the API validates against these; "-" is descending).
StudentOrder = Literal[
    "health_score",
    "-health_score",
    "sessions_7d",
    "-sessions_7d",
    "ib_calls_14d",
    "-ib_calls_14d",
    "-days_since_last_session",
    "platform_health_score",
    "-updated_at",
    "updated_at",
    "student_id",
]
TutorOrder = Literal[
    "avg_rating",
    "-avg_rating",
    "utilisation",
    "-utilisation",
    "-burnout_risk",
    "burnout_risk",
    "sessions_7d",
    "-sessions_7d",
    "-updated_at",
    "updated_at",
    "tutor_id",
]
SubjectRegionOrder = Literal[
    "-own_ratio",
    "own_ratio",
    "-demand_supply_ratio",
    "demand_supply_ratio",
    "subject",
    "region",
    "-updated_at",
]
ORDERABLE: dict[str, tuple[str, ...]] = {
    "student": get_args(StudentOrder),
    "tutor": get_args(TutorOrder),
    "subject_region": get_args(SubjectRegionOrder),
}
