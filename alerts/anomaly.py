"""Rate anomalies on the global per-minute series, judged by event time and against their own history.

Every series counts events by the minute they happened (a backfill or a replayed backlog fills the past
minutes it belongs to; it is not a burst in the minute it arrived). Once a minute, the sweep judges the
window of the last k minutes (k = 1, 5, 15) ending at the latest complete minute against two baselines:

    short  the rate per minute over the ALERT_ANOMALY_WINDOW_MINUTES before the window
    long   the rate per minute over the 24 hours before the window (when 6 hours of it are observed)

A spike must stand out against both (the higher one), a drop against both (the lower one), so the end of
a spike is a return to the long-run rate, not a drop. "Stands out" is a Poisson tail probability with the
series' own over-dispersion, expressed as a z-score: ≥ ALERT_ANOMALY_Z_WARNING is a warning,
≥ ALERT_ANOMALY_Z_CRITICAL and a factor ≥ ALERT_ANOMALY_CRITICAL_RATIO a critical; a spike also needs a
factor ≥ ALERT_ANOMALY_MIN_RATIO and ALERT_ANOMALY_MIN_VOLUME events, a drop that factor below and that
volume expected.

History and gaps, the rules:
- no judgement until the short baseline has ALERT_ANOMALY_MIN_HISTORY_MINUTES observed minutes (a fresh
  install, or the first minutes after a long outage, raise nothing);
- a gap — a run of minutes in which nothing at all happened by event time, too long to be chance at the
  marketplace's usual volume (GAP_CHANCE) — is a restart, an outage or data not yet arrived: gaps and
  their neighbours leave the baselines, and a window touching one is not judged;
- drops are judged one minute later than spikes, once a later minute has data (a lagging worker makes
  the latest minute look low, never high);
- while an anomaly of a series is active, its baselines end where the anomaly began (the anomaly does not
  become its own baseline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist

import numpy as np
from django.conf import settings

from alerts import thresholds
from alerts.models import ACTIVE_STATUSES, SEVERITY_RANK, Alert, AlertType, EntityType, Severity
from alerts.rules import Candidate
from metrics.models import GlobalMinute

# Alert entity id (series name) → GlobalMinute column (all by event minute).
SERIES = {
    "ib_calls": "ib_calls",
    "sessions_started": "sessions_started",
    "cancellations": "sessions_unsuccessful",
    "ingest_volume": "events",
}
WINDOWS = (1, 5, 15)
LONG = timedelta(hours=24)
LONG_MIN_OBSERVED = 6 * 60
GAP_CHANCE = 1e-3  # a run of empty minutes less likely than this at the usual volume is a gap
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Finding:
    direction: str  # "spike" or "drop"
    severity: str
    window: int  # minutes
    expected: float  # events expected in the window
    observed: float
    z: float
    baseline_short: float  # rate per minute
    baseline_long: float | None


def _log_poisson_pmf(k: int, mu: float) -> float:
    return k * math.log(mu) - mu - math.lgamma(k + 1)


def _tail_z(observed: float, expected: float, dispersion: float, *, upper: bool) -> float:
    """How surprising `observed` is against `expected` (a Poisson count, over-dispersed by a factor),
    as the z-score of the same one-sided tail probability. Positive: as surprising as z sigmas."""
    mu, x = expected / dispersion, observed / dispersion
    if mu <= 0:
        return math.inf if upper and observed > 0 else 0.0
    if mu >= 30:  # normal approximation, with continuity correction
        z = (x - mu - 0.5) / math.sqrt(mu) if upper else (mu - x - 0.5) / math.sqrt(mu)
        return max(z, 0.0)
    n = math.floor(x) if not upper else math.ceil(x)
    if upper:
        if n <= mu:
            return 0.0
        terms = [_log_poisson_pmf(i, mu) for i in range(n, n + 200)]  # P(X >= n)
    else:
        if n >= mu:
            return 0.0
        terms = [_log_poisson_pmf(i, mu) for i in range(0, n + 1)]  # P(X <= n)
    top = max(terms)
    log_p = top + math.log(sum(math.exp(t - top) for t in terms))
    p = math.exp(log_p)
    if p <= 0:
        return 40.0
    return max(-_NORMAL.inv_cdf(min(p, 0.5)), 0.0)


def _rate(values: Sequence[float] | np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def _dispersion(values: Sequence[float] | np.ndarray) -> float:
    """Variance over mean of the per-minute counts (1 for a Poisson series), at least 1."""
    if len(values) < 2:
        return 1.0
    mean = _rate(values)
    if mean <= 0:
        return 1.0
    return max(1.0, float(np.var(values, ddof=1)) / mean)


LIMIT_NAMES = (
    "ALERT_ANOMALY_MIN_VOLUME",
    "ALERT_ANOMALY_MIN_RATIO",
    "ALERT_ANOMALY_Z_WARNING",
    "ALERT_ANOMALY_Z_CRITICAL",
    "ALERT_ANOMALY_CRITICAL_RATIO",
)


def anomaly_limits() -> dict[str, float]:
    """The runtime values of the anomaly thresholds, read once per evaluation (alerts.thresholds)."""
    return {name: thresholds.get(name) for name in LIMIT_NAMES}


def judge(
    *,
    window: Sequence[float] | np.ndarray,
    short: Sequence[float] | np.ndarray,
    long: Sequence[float] | np.ndarray | None,
    direction: str,
    limits: dict[str, float] | None = None,
) -> Finding | None:
    """One series, one window of k minutes, its baselines (observed minutes only). Pure: numbers in;
    `limits` are the ALERT_ANOMALY_* thresholds (`anomaly_limits()`; the environment's when absent)."""
    lim = limits or {name: getattr(settings, name) for name in LIMIT_NAMES}
    k = len(window)
    observed = float(np.sum(window))
    short_rate = _rate(short)
    long_rate = _rate(long) if long is not None and len(long) else None
    rates = [short_rate] + ([long_rate] if long_rate is not None else [])
    rate = max(rates) if direction == "spike" else min(rates)
    expected = rate * k
    dispersion = _dispersion(short)
    upper = direction == "spike"
    # A spike is judged on what came, a drop on what should have come; the ratio is the larger over the smaller.
    big, small = (observed, expected) if upper else (expected, observed)
    if big < lim["ALERT_ANOMALY_MIN_VOLUME"]:
        return None
    ratio = big / small if small > 0 else math.inf
    if ratio < lim["ALERT_ANOMALY_MIN_RATIO"]:
        return None
    z = _tail_z(observed, expected, dispersion, upper=upper)
    if z < lim["ALERT_ANOMALY_Z_WARNING"]:
        return None
    critical = z >= lim["ALERT_ANOMALY_Z_CRITICAL"] and ratio >= lim["ALERT_ANOMALY_CRITICAL_RATIO"]
    return Finding(
        direction=direction,
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        window=k,
        expected=round(expected, 2),
        observed=observed,
        z=round(z, 1) if z < 40 else 40.0,
        baseline_short=round(short_rate, 3),
        baseline_long=round(long_rate, 3) if long_rate is not None else None,
    )


def _gaps(empty: np.ndarray, usual: float) -> np.ndarray:
    """The runs of empty minutes (no event at all) too long to be chance at the usual volume —
    e^(−usual·length) below GAP_CHANCE: one minute at 7 events a minute, 4 at 2, 14 at 0.5."""
    gap = np.zeros_like(empty)
    longest_chance = -math.log(GAP_CHANCE) / usual  # runs at least this long are not chance
    i, n = 0, len(empty)
    while i < n:
        if not empty[i]:
            i += 1
            continue
        j = i
        while j < n and empty[j]:
            j += 1
        if j - i >= longest_chance:
            gap[i:j] = True
        i = j
    return gap


@dataclass
class _Grid:
    """The series minute by minute, oldest first, with which minutes count as observed history."""

    first: datetime  # the minute at index 0
    series: np.ndarray  # one row per SERIES entry
    observed: np.ndarray  # minute usable as history (not before the first data, not in or next to a gap)
    latest_with_data: int  # index of the newest minute with any event (-1: none)

    @property
    def last(self) -> int:
        return self.series.shape[1] - 1


def _load_grid(minute: datetime) -> _Grid:
    one = timedelta(minutes=1)
    size = settings.ALERT_ANOMALY_WINDOW_MINUTES
    biggest = max(WINDOWS)
    span = int(LONG / one) + size + biggest + 2
    first = minute - one * (span - 1)
    rows = GlobalMinute.objects.filter(minute__gte=first, minute__lte=minute).per_minute(*SERIES.values())
    series = np.zeros((len(SERIES), span))
    for m, *counts in rows:
        series[:, int((m - first) / one)] = counts
    totals = series[list(SERIES).index("ingest_volume")]  # every event, by event minute
    # History starts with the first minute that has data (unless older data exists): the minutes before
    # a fresh install's first event are not quiet minutes, they are no history at all.
    with_data = np.nonzero(totals > 0)[0]
    older = GlobalMinute.objects.filter(minute__lt=first).exists()
    start = 0 if older else (int(with_data[0]) if with_data.size else span)
    # The marketplace's usual volume (all events), for telling gaps from quiet minutes.
    recent = totals[max(start, span - size - biggest) :]
    usual = float(recent.mean()) if recent.size else 0.0
    observed = np.ones(span, dtype=bool)
    observed[:start] = False
    if usual > 0:  # gaps, and their neighbours (partial minutes at a restart's edges)
        gap = _gaps(totals == 0, usual)
        near = gap.copy()
        near[1:] |= gap[:-1]
        near[:-1] |= gap[1:]
        observed &= ~near
    return _Grid(first, series, observed, int(with_data[-1]) if with_data.size else -1)


def _stronger(f: Finding | None, than: Finding | None) -> bool:
    return f is not None and (
        than is None or (SEVERITY_RANK[f.severity], f.z) > (SEVERITY_RANK[than.severity], than.z)
    )


def _judge_series(
    values: np.ndarray, grid: _Grid, cut: int | None, limits: dict[str, float]
) -> tuple[Finding | None, bool]:
    """The strongest finding over the windows and both directions, and whether any window had enough
    history to be judged. `cut`: an active anomaly's baselines end there; `limits`: anomaly_limits()."""
    size = settings.ALERT_ANOMALY_WINDOW_MINUTES
    observed = grid.observed
    found: Finding | None = None
    judged = False
    for direction, end in (("spike", grid.last), ("drop", grid.last - 1)):
        if direction == "drop" and grid.latest_with_data <= end:
            continue  # a lagging worker makes the latest minute look low: wait for a later one
        for k in WINDOWS:
            lo = end - k + 1
            if lo < 0 or not observed[lo : end + 1].all():
                continue
            base_end = min(lo, cut) if cut is not None else lo
            if base_end <= 0:
                continue
            short_idx = np.arange(max(0, base_end - size), base_end)
            short = values[short_idx[observed[short_idx]]]
            if short.size < settings.ALERT_ANOMALY_MIN_HISTORY_MINUTES:
                continue
            long = values[:base_end][observed[:base_end]]
            judged = True
            f = judge(
                window=values[lo : end + 1],
                short=short,
                long=long if long.size >= LONG_MIN_OBSERVED else None,
                direction=direction,
                limits=limits,
            )
            if _stronger(f, found):
                found = f
    return found, judged


def _candidate(name: str, found: Finding, minute: datetime) -> Candidate:
    per_min = found.expected / found.window
    factor = found.observed / found.expected if found.expected else math.inf
    return Candidate(
        AlertType.RATE_ANOMALY,
        EntityType.GLOBAL,
        name,
        found.severity,
        f"{name.replace('_', ' ')} {found.direction}: {found.observed:.0f} in the {found.window} min "
        f"to {minute:%H:%M} vs {found.expected:.1f} expected ({per_min:.1f}/min, "
        f"×{factor:.1f}, z {found.z:.0f})",
        {
            "series": name,
            "direction": found.direction,
            "minute": minute.isoformat(),
            "window_minutes": found.window,
            "expected": found.expected,
            "observed": found.observed,
            "z": found.z,
            "baseline_per_minute": found.baseline_short,
            "baseline_24h_per_minute": found.baseline_long,
            "by": "event time",
        },
    )


def rate_candidates(*, now: datetime) -> tuple[list[Candidate], set[str], datetime]:
    """Evaluate every series at the latest complete minute before `now`: candidates, the fingerprints
    decided (an active anomaly not found again is clear) and the minute evaluated."""
    one = timedelta(minutes=1)
    minute = now.replace(second=0, microsecond=0) - one
    grid = _load_grid(minute)
    limits = anomaly_limits()  # the runtime thresholds, read once for every series
    active = dict(
        Alert.objects.filter(
            type=AlertType.RATE_ANOMALY, entity_type=EntityType.GLOBAL, status__in=ACTIVE_STATUSES
        ).values_list("entity_id", "first_seen")
    )
    candidates: list[Candidate] = []
    decided: set[str] = set()
    for row, name in enumerate(SERIES):
        fp = f"{AlertType.RATE_ANOMALY}:{EntityType.GLOBAL}:{name}"
        began = active.get(name)
        # While an anomaly is active, its baselines end where it began (minus the widest window).
        cut = None
        if began is not None:
            cut = int((began.replace(second=0, microsecond=0) - grid.first) / one) - max(WINDOWS)
        found, judged = _judge_series(grid.series[row], grid, cut, limits)
        if judged or found is not None or (began is not None and minute - began > LONG):
            decided.add(fp)
        if found is not None:
            candidates.append(_candidate(name, found, minute))
    return candidates, decided, minute
