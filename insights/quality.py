"""Model quality (/quality, /api/insights/quality): how operators graded the alerts, per alert type and
per insight model, and how well the churn risk foretold what students did next.

- Precision of what operators acted on: acted on / labelled (alerts.AlertLabel), over the alerts first
  seen in the range; "not enough data" (None) under QUALITY_MIN_LABELS labels.
- Calibration: each student's latest churn scoring at least HORIZON before the end of the data (or of
  the range, whichever is earlier) and within the range moved back by HORIZON, against whether they
  stopped booking — no session started or completed in the HORIZON after the score. Reliability bins of
  predicted risk, each with its count, its observed rate only from QUALITY_MIN_BIN scores on, and the
  Brier score.
- The suggested health cut (ALERT_LOW_HEALTH_WARNING): the whole-number cut that maximises F1 of
  "health below the cut → stops booking" on the same sample, with its precision and recall; only when
  the sample has enough students who stopped and who did not, and only when that cut's precision is at
  least MIN_LIFT × the sample's stop rate (else no cut separates them better than chance)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Q

from alerts import thresholds
from alerts.models import Alert, AlertLabel, AlertType, DismissReason, LabelKind
from insights.models import Insight
from insights.selectors import BEDROCK_PREFIX
from metrics.models import GlobalMinute, Session

HORIZON = timedelta(days=30)
BINS = 10
# A suggested cut must flag students who stop at least this many times as often as the sample does.
MIN_LIFT = 1.5
_CHUNK = 500


def model_family(model: str) -> str:
    if model.startswith(BEDROCK_PREFIX):
        return "bedrock"
    return "local" if model.startswith("local:") else "other"


def _precision(acted: int, dismissed: int) -> float | None:
    labelled = acted + dismissed
    return round(acted / labelled, 3) if labelled >= settings.QUALITY_MIN_LABELS and labelled else None


def by_alert_type(*, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per alert type first seen in [start, end): raised, acted on, dismissed, precision, reasons."""
    alerts = Alert.objects.filter(first_seen__gte=start, first_seen__lt=end)
    rows = (
        alerts.values("type")
        .annotate(
            raised=Count("id"),
            acted=Count("id", filter=Q(label__label=LabelKind.ACTED_ON)),
            dismissed=Count("id", filter=Q(label__label=LabelKind.DISMISSED)),
        )
        .order_by("type")
    )
    reasons: dict[str, dict[str, int]] = defaultdict(dict)
    dismissed = AlertLabel.objects.filter(alert__in=alerts, label=LabelKind.DISMISSED)
    for t, reason, n in dismissed.values_list("alert__type", "reason").annotate(n=Count("id")).order_by():
        reasons[t][reason] = n
    labels = dict(AlertType.choices)
    return [
        {
            "type": r["type"],
            "label": labels.get(r["type"], r["type"]),
            "raised": r["raised"],
            "acted_on": r["acted"],
            "dismissed": r["dismissed"],
            "precision": _precision(r["acted"], r["dismissed"]),
            "reasons": {code: reasons[r["type"]].get(code, 0) for code in DismissReason.values},
        }
        for r in rows
    ]


def by_model(*, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Per insight model, over the alerts first seen in the range that it scored (each alert once per
    model): alerts, acted on, dismissed, precision."""
    alert_ids = Alert.objects.filter(first_seen__gte=start, first_seen__lt=end).values("id")
    pairs = set(
        Insight.objects.filter(alert_id__in=alert_ids).values_list("model", "alert_id").distinct().order_by()
    )
    labels: dict[int | None, str] = dict(
        AlertLabel.objects.filter(alert_id__in={a for _, a in pairs}).values_list("alert_id", "label")
    )
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"alerts": 0, "acted": 0, "dismissed": 0})
    for model, alert_id in pairs:
        c = counts[model]
        c["alerts"] += 1
        c["acted"] += labels.get(alert_id) == LabelKind.ACTED_ON
        c["dismissed"] += labels.get(alert_id) == LabelKind.DISMISSED
    return [
        {
            "model": model,
            "family": model_family(model),
            "alerts": c["alerts"],
            "acted_on": c["acted"],
            "dismissed": c["dismissed"],
            "precision": _precision(c["acted"], c["dismissed"]),
        }
        for model, c in sorted(counts.items())
    ]


@dataclass(frozen=True)
class Outcome:
    student_id: str
    scored_at: datetime
    risk: float
    health: float | None
    stopped: bool


def data_end() -> datetime | None:
    """The minute of the latest event the platform sent (the global per-minute series)."""
    return GlobalMinute.objects.aggregate(m=Max("minute"))["m"]


def churn_outcomes(*, start: datetime, end: datetime) -> tuple[list[Outcome], datetime, datetime]:
    """Each student's latest churn scoring in [start, end) − HORIZON, capped so that HORIZON of data
    follows it, with whether they stopped booking in that HORIZON."""
    last = data_end()
    upper = min(end, last + timedelta(minutes=1)) - HORIZON if last else end - HORIZON
    lower = start - HORIZON
    latest: dict[str, Insight] = {}
    rows = Insight.objects.filter(
        entity_type="student", cached_from__isnull=True, scored_at__gte=lower, scored_at__lt=upper
    ).only("entity_id", "scored_at", "risk", "features")
    for ins in rows.order_by("scored_at", "pk").iterator():
        latest[ins.entity_id] = ins
    ids = sorted(latest)
    booked: dict[str, list[datetime]] = defaultdict(list)
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        window = Q(started_at__gt=lower, started_at__lte=upper + HORIZON) | Q(
            completed_at__gt=lower, completed_at__lte=upper + HORIZON
        )
        for sid, started, completed in Session.objects.filter(window, student_id__in=chunk).values_list(
            "student_id", "started_at", "completed_at"
        ):
            booked[sid].extend(t for t in (started, completed) if t is not None)
    outcomes = []
    for sid in ids:
        ins = latest[sid]
        after = any(ins.scored_at < t <= ins.scored_at + HORIZON for t in booked[sid])
        health = (ins.features or {}).get("health")
        outcomes.append(
            Outcome(sid, ins.scored_at, ins.risk, float(health) if health is not None else None, not after)
        )
    return outcomes, lower, upper


def reliability(outcomes: list[Outcome]) -> dict[str, Any]:
    """Bins of predicted risk: count, mean risk, observed stop rate (None below QUALITY_MIN_BIN); Brier."""
    minimum = settings.QUALITY_MIN_BIN
    bins = []
    for b in range(BINS):
        lo, hi = b / BINS, (b + 1) / BINS
        members = [o for o in outcomes if lo <= o.risk < hi or (b == BINS - 1 and o.risk == 1.0)]
        n = len(members)
        enough = n >= minimum
        bins.append(
            {
                "low": lo,
                "high": hi,
                "count": n,
                "mean_risk": round(sum(o.risk for o in members) / n, 3) if enough else None,
                "observed_rate": round(sum(o.stopped for o in members) / n, 3) if enough else None,
            }
        )
    brier = None
    if len(outcomes) >= 2 * minimum:
        brier = round(sum((o.risk - o.stopped) ** 2 for o in outcomes) / len(outcomes), 4)
    return {
        "bins": bins,
        "brier": brier,
        "scored": len(outcomes),
        "stopped": sum(o.stopped for o in outcomes),
    }


def suggested_health_cut(outcomes: list[Outcome]) -> dict[str, Any] | None:
    """The whole-number health cut maximising F1 of "below the cut → stopped", ties to the higher
    precision; None without QUALITY_MIN_BIN students on each side of the outcome; `cut` None when the
    best cut's precision is under MIN_LIFT × the base rate (it would flag nearly at random)."""
    sample = [(o.health, o.stopped) for o in outcomes if o.health is not None]
    positives = sum(s for _, s in sample)
    minimum = settings.QUALITY_MIN_BIN
    if positives < minimum or len(sample) - positives < minimum:
        return None
    best = None
    for cut in range(1, 101):
        flagged = [s for h, s in sample if h < cut]
        tp = sum(flagged)
        if not tp:
            continue
        precision, recall = tp / len(flagged), tp / positives
        f1 = 2 * precision * recall / (precision + recall)
        key = (round(f1, 6), round(precision, 6))
        if best is None or key > best[0]:
            best = (key, cut, precision, recall, f1, len(flagged))
    base_rate = positives / len(sample)
    current = thresholds.get("ALERT_LOW_HEALTH_WARNING")
    if best is None or best[2] < MIN_LIFT * base_rate:
        # The best F1 is then little more than flagging everyone: no cut separates them on this evidence.
        return {
            "setting": "ALERT_LOW_HEALTH_WARNING",
            "cut": None,
            "current": current,
            "base_rate": round(base_rate, 3),
        }
    _, cut, precision, recall, f1, n_flagged = best
    return {
        "setting": "ALERT_LOW_HEALTH_WARNING",
        "cut": cut,
        "current": current,
        "base_rate": round(base_rate, 3),
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "flagged": n_flagged,
        "sample": len(sample),
    }


def quality_report(*, start: datetime, end: datetime) -> dict[str, Any]:
    outcomes, lower, upper = churn_outcomes(start=start, end=end)
    return {
        "start": start,
        "end": end,
        "min_labels": settings.QUALITY_MIN_LABELS,
        "min_bin": settings.QUALITY_MIN_BIN,
        "alert_types": by_alert_type(start=start, end=end),
        "models": by_model(start=start, end=end),
        "calibration": {
            "horizon_days": HORIZON.days,
            "scored_from": lower,
            "scored_until": upper,
            **reliability(outcomes),
        },
        "suggested_threshold": suggested_health_cut(outcomes),
    }
