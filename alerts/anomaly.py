"""Rate anomalies on the global per-minute series: EWMA baseline, robust z-score (median/MAD).

For each series the latest complete minute is compared with the trailing window before it:

    expected = EWMA of the window (span = window / 4, recent minutes weigh more)
    scale    = max(1.4826 · MAD(window), √max(expected, 1))   # robust σ, floored at Poisson noise
    z        = (observed − expected) / scale

A spike (z ≥ ALERT_ANOMALY_Z_WARNING) or a drop (z ≤ −ALERT_ANOMALY_Z_WARNING) is a warning, critical
beyond ALERT_ANOMALY_Z_CRITICAL. Nothing fires while max(expected, observed) < ALERT_ANOMALY_MIN_VOLUME
(quiet periods), nor before the series has a full window of history (a fresh system is not a spike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.conf import settings

from alerts.models import AlertType, EntityType, Severity
from alerts.rules import Candidate
from metrics.models import GlobalMinute

# Alert entity id (series name) → GlobalMinute column.
SERIES = {
    "ib_calls": "ib_calls",
    "sessions_started": "sessions_started",
    "cancellations": "sessions_unsuccessful",
    "ingest_volume": "received",
}
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class Finding:
    direction: str  # "spike" or "drop"
    severity: str
    expected: float
    observed: float
    z: float


def detect(
    window: Sequence[float],
    observed: float,
    *,
    z_warning: float,
    z_critical: float,
    min_volume: float,
) -> Finding | None:
    """Compare one observation with its trailing window (oldest first). Pure: numbers in, finding out."""
    history = np.asarray(window, dtype=float)
    if history.size == 0:
        return None
    alpha = 2 / (max(history.size / 4, 1) + 1)
    weights = (1 - alpha) ** np.arange(history.size)[::-1]
    expected = float(np.dot(weights, history) / weights.sum())
    if max(expected, observed) < min_volume:
        return None
    median = np.median(history)
    mad = float(np.median(np.abs(history - median)))
    scale = max(MAD_TO_SIGMA * mad, float(np.sqrt(max(expected, 1.0))))
    z = (observed - expected) / scale
    if abs(z) < z_warning:
        return None
    return Finding(
        direction="spike" if z > 0 else "drop",
        severity=Severity.CRITICAL if abs(z) >= z_critical else Severity.WARNING,
        expected=round(expected, 2),
        observed=float(observed),
        z=round(float(z), 2),
    )


def rate_candidates(*, now: datetime) -> tuple[list[Candidate], set[str], datetime]:
    """Evaluate every series at the latest complete minute before `now`: candidates, the fingerprints
    decided (an active anomaly not found again is clear) and the minute evaluated."""
    minute = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    size = settings.ALERT_ANOMALY_WINDOW_MINUTES
    start = minute - timedelta(minutes=size)
    evaluated = {f"{AlertType.RATE_ANOMALY}:{EntityType.GLOBAL}:{name}" for name in SERIES}
    if not GlobalMinute.objects.filter(minute__lte=start).exists():
        return [], evaluated, minute  # less than a full window of history
    rows = GlobalMinute.objects.filter(minute__gte=start, minute__lte=minute).values(
        "minute", *SERIES.values()
    )
    index = {r["minute"]: r for r in rows}
    minutes = [start + timedelta(minutes=i) for i in range(size + 1)]  # missing minutes are zeros
    candidates = []
    for name, column in SERIES.items():
        values = [float(index[m][column]) if m in index else 0.0 for m in minutes]
        found = detect(
            values[:-1],
            values[-1],
            z_warning=settings.ALERT_ANOMALY_Z_WARNING,
            z_critical=settings.ALERT_ANOMALY_Z_CRITICAL,
            min_volume=settings.ALERT_ANOMALY_MIN_VOLUME,
        )
        if found is None:
            continue
        candidates.append(
            Candidate(
                AlertType.RATE_ANOMALY,
                EntityType.GLOBAL,
                name,
                found.severity,
                f"{name.replace('_', ' ')} {found.direction}: {found.observed:.0f}/min "
                f"at {minute:%H:%M} vs {found.expected:.1f} expected (z {found.z:+.1f})",
                {
                    "series": name,
                    "direction": found.direction,
                    "minute": minute.isoformat(),
                    "expected": found.expected,
                    "observed": found.observed,
                    "z": found.z,
                    "window_minutes": size,
                },
            )
        )
    return candidates, evaluated, minute
