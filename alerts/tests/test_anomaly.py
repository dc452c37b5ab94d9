"""Rate anomalies: the detector on synthetic series, then end to end through ingest and the sweep task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import time_machine
from django.core.cache import cache

from alerts.anomaly import detect
from alerts.models import Alert
from alerts.periodic import sweep
from conftest import event

THRESHOLDS = {"z_warning": 5.0, "z_critical": 10.0, "min_volume": 5.0}


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def noisy(mean: float, n: int = 60, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).poisson(mean, n).astype(float)


@pytest.mark.parametrize(("observed", "severity"), [(80, "critical"), (45, "warning")])
def test_injected_spike_fires_with_expected_and_observed(observed, severity):
    found = detect(noisy(20), observed, **THRESHOLDS)
    assert found is not None and found.direction == "spike" and found.severity == severity
    assert found.observed == observed and 17 <= found.expected <= 23
    assert found.z == pytest.approx(
        (observed - found.expected) / max(1.4826 * 3, np.sqrt(found.expected)), rel=0.35
    )


@pytest.mark.parametrize(("mean", "observed", "severity"), [(100, 10, "warning"), (200, 0, "critical")])
def test_injected_drop_fires(mean, observed, severity):
    found = detect(noisy(mean), observed, **THRESHOLDS)
    assert found is not None and found.direction == "drop" and found.severity == severity
    assert abs(found.expected - mean) <= mean * 0.1 and found.z <= -5


def test_clean_noisy_series_never_fires():
    for seed in range(300):
        series = noisy(20, n=61, seed=seed)
        assert detect(series[:-1], series[-1], **THRESHOLDS) is None, seed
    rng = np.random.default_rng(7)
    for _ in range(300):  # wider than Poisson: the MAD carries the scale
        series = np.clip(rng.normal(200, 40, 61), 0, None)
        assert detect(series[:-1], series[-1], **THRESHOLDS) is None


def test_quiet_series_below_minimum_volume_never_fires():
    quiet = noisy(0.3)
    assert detect(quiet, 4, **THRESHOLDS) is None
    assert detect(np.zeros(60), 4, **THRESHOLDS) is None
    # the same jump above the minimum volume does fire
    assert detect(np.zeros(60), 12, **THRESHOLDS) is not None


def test_a_trend_inside_the_window_is_followed_by_the_ewma():
    ramp = np.linspace(20, 60, 60)
    assert detect(ramp, 62, **THRESHOLDS) is None


# --- end to end ----------------------------------------------------------------------------------

NOW = datetime(2026, 3, 20, 12, 0, 30, tzinfo=UTC)
LAST = datetime(2026, 3, 20, 11, 59, tzinfo=UTC)  # the latest complete minute at NOW


def ib_calls_per_minute(counts: dict[datetime, int]) -> list[dict]:
    events = []
    for minute, n in counts.items():
        for i in range(n):
            ts = (minute + timedelta(seconds=i % 60)).isoformat()
            events.append(event("ib_call_logged", student_id=f"stu_{i % 10}", timestamp=ts))
    return events


@pytest.mark.django_db
def test_ib_call_spike_raises_a_rate_anomaly_once_per_minute(post, drain):
    counts = {LAST - timedelta(minutes=m): 6 for m in range(1, 62)}
    counts[LAST] = 40
    with time_machine.travel(NOW, tick=False):
        assert post({"events": ib_calls_per_minute(counts)}).status_code == 202
        drain()
        sweep.apply()
        sweep.apply()  # the same minute again: not counted twice
    alert = Alert.objects.get(type="rate_anomaly")
    assert (alert.entity_type, alert.entity_id, alert.severity) == ("global", "ib_calls", "critical")
    d = alert.details
    assert d["observed"] == 40 and d["expected"] == pytest.approx(6, abs=0.5) and d["z"] > 10
    assert d["direction"] == "spike" and d["window_minutes"] == 60 and d["minute"] == LAST.isoformat()
    assert alert.occurrences == 1
    # next minute has no calls: not a drop at this volume, and the anomaly is seen clear
    with time_machine.travel(NOW + timedelta(minutes=1), tick=False):
        sweep.apply()
    alert.refresh_from_db()
    assert alert.clear_since == NOW + timedelta(minutes=1) and alert.occurrences == 1
    assert Alert.objects.filter(type="rate_anomaly", entity_id="ib_calls").count() == 1


@pytest.mark.django_db
def test_no_anomaly_without_a_full_window_of_history(post, drain):
    counts = {LAST - timedelta(minutes=m): 6 for m in range(1, 30)}
    counts[LAST] = 40
    with time_machine.travel(NOW, tick=False):
        post({"events": ib_calls_per_minute(counts)})
        drain()
        sweep.apply()
    assert not Alert.objects.filter(type="rate_anomaly").exists()


@pytest.mark.django_db
def test_a_minute_is_evaluated_once_even_by_sweeps_in_other_processes(post, drain):
    """Each worker process has its own local cache: the once-a-minute guard must not live there."""
    counts = {LAST - timedelta(minutes=m): 6 for m in range(1, 62)}
    counts[LAST] = 40
    with time_machine.travel(NOW, tick=False):
        post({"events": ib_calls_per_minute(counts)})
        drain()
        sweep.apply()
        cache.clear()  # what a sweep in another process sees of this one's cache: nothing
        sweep.apply()
    assert Alert.objects.get(type="rate_anomaly").occurrences == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_evaluate_a_minute_once(post, drain):
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    counts = {LAST - timedelta(minutes=m): 6 for m in range(1, 62)}
    counts[LAST] = 40
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def run():
        try:
            barrier.wait(timeout=10)
            sweep.apply().get()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    with time_machine.travel(NOW, tick=False):
        post({"events": ib_calls_per_minute(counts)})
        drain()
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors
    alert = Alert.objects.get(type="rate_anomaly")
    assert alert.occurrences == 1 and alert.transitions.count() == 1
