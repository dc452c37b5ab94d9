"""Tutor snapshots recomputed from window sums over hour buckets and the tutor's reported availability:
ratings, completion, utilisation and burnout risk."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any

from iops.lib.jsontext import json_text
from metrics.burnout import burnout_components, burnout_risk
from metrics.models import TutorHourly, TutorSnapshot
from metrics.services.columns import TUTOR_REFRESH_FIELDS, TUTOR_TABLE, TUTOR_WINDOWS
from metrics.services.db import Windows, chunks, rows_by_id, window_sums

_SUMS = Windows(TUTOR_WINDOWS)


def refresh_tutors(ids: list[str], now: datetime) -> dict[str, SimpleNamespace]:
    """Recompute these tutors' snapshots as of `now`; returns each one's alert-rule inputs."""
    views: dict[str, SimpleNamespace] = {}
    for chunk in chunks(ids):
        sums = window_sums(TutorHourly, "tutor_id", chunk, _SUMS, now)
        availability = rows_by_id(TutorSnapshot, "tutor_id", chunk, ("available_hours",))
        rows = []
        for tid in chunk:
            available = a["available_hours"] if (a := availability.get(tid)) else None
            values, components = _tutor(sums.get(tid, _SUMS.empty), available, now)
            view = SimpleNamespace(**values)
            view.tutor_id, view.available_hours, view.burnout_components = tid, available, components
            views[tid] = view
            values["tutor_id"] = tid
            rows.append(values)
        TUTOR_TABLE.upsert(rows, now, columns=TUTOR_REFRESH_FIELDS)
    return views


def _tutor(
    w: dict[str, Any], available: float | None, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One tutor's refreshed snapshot values (burnout components as JSON text: the row holds plain
    values only) and the burnout components."""
    sessions_30d, rated, rated_7d = w["sessions_30d"], w["rating_count_30d"], w["rating_count_7d"]
    rated_prior = rated - rated_7d
    hours_taught_7d = round(w["minutes_7d"] / 60, 2)
    utilisation = round(hours_taught_7d / available, 3) if available else None
    avg_rating_7d = round(w["rating_sum_7d"] / rated_7d, 2) if rated_7d else None
    avg_rating_prior = (
        round((w["rating_sum_30d"] - w["rating_sum_7d"]) / rated_prior, 2) if rated_prior else None
    )
    prior_weekly_mean = round((w["sessions_28d"] - w["sessions_7d"]) / 3, 3)
    components = burnout_components(
        utilisation=utilisation,
        avg_rating_7d=avg_rating_7d,
        rated_7d=rated_7d,
        avg_rating_prior=avg_rating_prior,
        rated_prior=rated_prior,
        sessions_7d=w["sessions_7d"],
        prior_weekly_mean=prior_weekly_mean,
    )
    # No sessions and no availability: nothing to judge load by.
    active = sessions_30d or w["sessions_started_30d"] or available
    values = {
        "sessions_7d": w["sessions_7d"],
        "sessions_14d": w["sessions_14d"],
        "sessions_30d": sessions_30d,
        "sessions_started_30d": w["sessions_started_30d"],
        "unsuccessful_30d": w["unsuccessful_30d"],
        "rated_sessions": rated,
        # Mean of rated sessions only (the prototype divided by all sessions and started at 0).
        "avg_rating": round(w["rating_sum_30d"] / rated, 2) if rated else None,
        "completion_rate": (
            round((sessions_30d - w["unsuccessful_30d"]) / sessions_30d, 3) if sessions_30d else None
        ),
        "hours_taught_7d": hours_taught_7d,
        "utilisation": utilisation,
        "avg_rating_7d": avg_rating_7d,
        "avg_rating_prior": avg_rating_prior,
        "prior_weekly_mean": prior_weekly_mean,
        "burnout_components": json_text(components),
        "burnout_risk": burnout_risk(components) if active else None,
        "as_of": now,
        "updated_at": now,
    }
    return values, components
