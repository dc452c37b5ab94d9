"""The time-driven passes (beat in production, threads of `serve` embedded): windows decay with the clock,
so snapshots are refreshed and rules re-run without a single new event; rate anomalies are judged once
a minute; alerts clear by themselves. Same after-commit list as a batch (pipeline.effects)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from alerts.services import alerts_auto_resolve, alerts_evaluate, alerts_rate_pass, alerts_recheck_active
from alerts.silences import silences_turned_alert_ids
from metrics.services import snapshots_refresh_stale
from pipeline.effects import after_pass


def refresh_stale(*, now: datetime) -> dict[str, int]:
    """Every SNAPSHOT_REFRESH_SECONDS: the snapshots whose windows decayed since they were last touched
    are refreshed, then their rules run (a student who stops booking shows a velocity collapse)."""
    with transaction.atomic():
        refreshed = snapshots_refresh_stale(now=now)
        raised = alerts_evaluate(touched=refreshed, now=now, count_repeats=False) if refreshed else []
        after_pass(raised, now=now)
    return {
        "refreshed": len(refreshed.students) + len(refreshed.tutors),
        "created": sum(r.created for r in raised),
        "updated": sum(not r.created for r in raised),
    }


def sweep(*, now: datetime) -> dict[str, int]:
    """Every ALERT_SWEEP_SECONDS: re-check active alerts, rate anomalies at most once per minute, then
    auto-resolve what has been clear long enough; rows a silence muted or unmuted by the clock are pushed."""
    with transaction.atomic():
        raised = alerts_recheck_active(now=now) + alerts_rate_pass(now=now)
        resolved = alerts_auto_resolve(now=now)
        # A silence that began or ended since the last sweep (twice the period: a late sweep still sees it).
        since = now - timedelta(seconds=2 * settings.ALERT_SWEEP_SECONDS)
        turned = silences_turned_alert_ids(since=since, now=now)
        after_pass(raised, now=now, updated=sorted(set(resolved) | set(turned)))
    return {
        "created": sum(r.created for r in raised),
        "updated": sum(not r.created for r in raised),
        "resolved": len(resolved),
    }
