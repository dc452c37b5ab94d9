"""The domain's shared words, defined once: IB call reasons and the subject × region key.

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
