"""Alert thresholds at runtime: the environment gives the defaults, staff override them in the admin.

Every reader asks `get(NAME)`. Each process keeps the overrides in memory and, at most once every
THRESHOLDS_CACHE_SECONDS (a per-process TTL, default 5 s), reads the one-row version number
(one primary-key row: its version and a small JSON of overrides). So a change made
in the admin reaches every worker's next batch within that time, without a restart, and the rules
never query per event. The process that saves a change forgets its copy at once."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.signals import setting_changed
from django.db import DatabaseError, transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spec:
    name: str
    kind: type  # int | float
    minimum: float
    maximum: float
    help: str


SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("ALERT_LOW_HEALTH_WARNING", float, 1, 100, "health below this is at risk (warning)"),
        Spec("ALERT_LOW_HEALTH_CRITICAL", float, 0, 99, "health below this is critical; < warning"),
        Spec("ALERT_IB_CALLS_14D", int, 1, 100, "support calls in 14 days that raise an alert"),
        Spec("ALERT_VELOCITY_DROP_RATIO", float, 0.05, 0.95, "this week / prior weekly mean below this"),
        Spec("ALERT_VELOCITY_MIN_PRIOR_WEEKLY", float, 0.5, 50, "prior sessions a week to be judged"),
        Spec("ALERT_VELOCITY_MAX_CHANCE", float, 0.0001, 0.5, "a quiet week this unlikely alarms"),
        Spec("ALERT_TUTOR_UTILISATION", float, 0.1, 2, "utilisation above this is overload"),
        Spec("ALERT_TUTOR_RATING", float, 1, 5, "mean rating below this is overload"),
        Spec("ALERT_TUTOR_MIN_RATED", int, 1, 1000, "rated sessions before the rating counts"),
        Spec("ALERT_IMBALANCE_SUSTAINED_MINUTES", int, 0, 1440, "high demand this long is a warning"),
        Spec("ALERT_IMBALANCE_SEVERE_RATIO", float, 1, 100, "demand/supply at or above this is critical"),
        Spec("ALERT_ANOMALY_Z_WARNING", float, 1, 100, "rate anomaly z-score for a warning; < critical"),
        Spec("ALERT_ANOMALY_Z_CRITICAL", float, 1, 1000, "rate anomaly z-score for a critical"),
        Spec("ALERT_ANOMALY_MIN_VOLUME", float, 0, 100000, "events a minute before a rate is judged"),
        Spec("ALERT_ANOMALY_MIN_RATIO", float, 1, 1000, "observed/expected ratio for a warning; ≤ critical"),
        Spec("ALERT_ANOMALY_CRITICAL_RATIO", float, 1, 1000, "observed/expected ratio for a critical"),
    )
}
# (lower, higher, relation): the lower must stay below (or at most) the higher, as effective values.
ORDERED = (
    ("ALERT_LOW_HEALTH_CRITICAL", "ALERT_LOW_HEALTH_WARNING", "<"),
    ("ALERT_ANOMALY_Z_WARNING", "ALERT_ANOMALY_Z_CRITICAL", "<"),
    ("ALERT_ANOMALY_MIN_RATIO", "ALERT_ANOMALY_CRITICAL_RATIO", "<="),
)

_lock = threading.Lock()
_cache: dict = {"checked": float("-inf"), "version": None, "values": {}}
# The fast path of `get`: (fresh until, on time.monotonic's clock; {name: effective value}), made at each
# refresh. One tuple, swapped whole: reading it needs no lock (a reference read is atomic), and while
# it is fresh a read is a clock read and a dict lookup, no settings read (the rules ask per entity).
_NEVER: tuple[float, dict[str, float]] = (float("-inf"), {})
_fresh: tuple[float, dict[str, float]] = _NEVER


def default(name: str) -> float:
    return getattr(settings, name)


def _merged(overrides: dict) -> dict[str, float]:
    """Every threshold's effective value: the override, else the environment's default."""
    return {
        name: default(name) if (value := overrides.get(name)) is None else spec.kind(value)
        for name, spec in SPECS.items()
    }


def _refresh() -> dict[str, float]:
    """The effective values, the overrides re-read (one query) when the TTL has passed."""
    global _fresh
    now = time.monotonic()
    ttl = settings.THRESHOLDS_CACHE_SECONDS
    with _lock:
        if now - _cache["checked"] < ttl:  # another thread is re-reading them: the values held meanwhile
            return _merged(_cache["values"])
        _cache["checked"] = now
    from alerts.models import ThresholdSet

    try:
        row = ThresholdSet.objects.filter(pk=1).values_list("version", "values").first()
        version, values = row or (0, {})
        with _lock:
            _cache["version"], _cache["values"] = version, {k: v for k, v in values.items() if k in SPECS}
    except DatabaseError:  # e.g. before migrations: the environment's values, and retry after the TTL
        logger.warning("alert thresholds not readable; using the environment's", exc_info=True)
    with _lock:
        merged = _merged(_cache["values"])
        if _cache["checked"] == now:  # no invalidate() in between: fresh for the TTL
            _fresh = (now + ttl, merged)
    return merged


def get(name: str) -> float:
    """The effective value of one threshold: the admin's override, else the environment's default."""
    until, values = _fresh
    if time.monotonic() < until:
        return values[name]
    return _refresh()[name]


def health_cuts() -> tuple[float, float]:
    """(critical, warning): the health score cuts of the alert, the at-risk KPI and the insight level."""
    return get("ALERT_LOW_HEALTH_CRITICAL"), get("ALERT_LOW_HEALTH_WARNING")


def invalidate() -> None:
    """Forget this process's copy (after a save here, and between tests)."""
    global _fresh
    with _lock:
        _cache.update(checked=float("-inf"), version=None, values={})
        _fresh = _NEVER


def _setting_changed(*, setting: str, **kwargs: object) -> None:
    """The effective values hold the environment's defaults and the TTL: a changed setting (override_settings,
    pytest-django's `settings`) is seen at the next read."""
    if setting in SPECS or setting == "THRESHOLDS_CACHE_SECONDS":
        invalidate()


setting_changed.connect(_setting_changed, dispatch_uid="alerts.thresholds")


def effective(overrides: dict) -> dict[str, float]:
    return {name: (overrides[name] if overrides.get(name) is not None else default(name)) for name in SPECS}


def errors_for(overrides: dict) -> dict[str, list[str]]:
    """Validation of a set of overrides (None = the default): each value in range, and the ordered pairs
    in order as they would take effect (an override against the other's default counts too)."""
    errors: dict[str, list[str]] = {}
    for name, value in overrides.items():
        spec = SPECS.get(name)
        if spec is None:
            errors.setdefault(name, []).append("not a runtime threshold")
        elif value is not None and not spec.minimum <= value <= spec.maximum:
            errors.setdefault(name, []).append(f"must be between {spec.minimum:g} and {spec.maximum:g}")
    values = effective(overrides)
    for low, high, rel in ORDERED:
        ok = values[low] < values[high] if rel == "<" else values[low] <= values[high]
        if not ok and low not in errors and high not in errors:
            word = "below" if rel == "<" else "at most"
            errors.setdefault(low, []).append(f"must be {word} {high} ({values[low]:g} vs {values[high]:g})")
    return errors


class InvalidThresholds(ValueError):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@transaction.atomic
def thresholds_update(*, overrides: dict, user, now: datetime) -> list:
    """Store new overrides (None or absent = back to the environment default), one audit row per
    changed name, and a new version. Returns the audit rows written (none when nothing changed)."""
    from alerts.models import ThresholdChange, ThresholdSet

    overrides = {k: (None if v is None else SPECS[k].kind(v)) for k, v in overrides.items() if k in SPECS}
    errors = errors_for(overrides) | {k: ["not a runtime threshold"] for k in overrides if k not in SPECS}
    if errors:
        raise InvalidThresholds(errors)
    row, _ = ThresholdSet.objects.select_for_update().get_or_create(pk=1)
    old = dict(row.values)
    new = {k: v for k, v in overrides.items() if v is not None}
    changed = sorted(n for n in SPECS if old.get(n) != new.get(n))
    if not changed:
        return []
    row.values, row.version, row.updated_at, row.updated_by = new, row.version + 1, now, user
    row.save()
    audit = ThresholdChange.objects.bulk_create(
        ThresholdChange(
            at=now, by=user, name=n, old_value=old.get(n), new_value=new.get(n), version=row.version
        )
        for n in changed
    )
    logger.info("alert thresholds changed", extra={"names": changed, "version": row.version})
    invalidate()  # this process's next read sees the change; the others within their TTL
    transaction.on_commit(invalidate)  # and no read between the two keeps the old version
    return audit
