"""Rate anomalies: the judgement on synthetic series, then end to end through ingest and the sweep task —
spikes, drops, and the things that are not anomalies (a fresh install, an outage, a backfill, the end
of a spike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import time_machine
from django.core.cache import cache

from alerts.anomaly import judge
from alerts.models import Alert
from conftest import event
from pipeline.tasks import sweep


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def noisy(mean: float, n: int = 60, seed: int = 1) -> list[float]:
    return np.random.default_rng(seed).poisson(mean, n).astype(float).tolist()


@pytest.mark.parametrize(("observed", "severity"), [(150, "critical"), (50, "warning")])
def test_injected_spike_fires_with_expected_and_observed(observed, severity):
    found = judge(window=[observed], short=noisy(20), long=noisy(20, n=1440, seed=2), direction="spike")
    assert found is not None and found.direction == "spike" and found.severity == severity
    assert found.observed == observed and 18 <= found.expected <= 22 and found.window == 1


@pytest.mark.parametrize(("mean", "observed", "severity"), [(100, 35, "warning"), (200, 0, "critical")])
def test_injected_drop_fires(mean, observed, severity):
    found = judge(window=[observed], short=noisy(mean), long=None, direction="drop")
    assert found is not None and found.direction == "drop" and found.severity == severity
    assert abs(found.expected - mean) <= mean * 0.1


def test_clean_noisy_series_never_fires():
    for seed in range(300):
        series = noisy(20, n=75, seed=seed)
        for k in (1, 5, 15):
            for direction in ("spike", "drop"):
                assert judge(window=series[-k:], short=series[:60], long=None, direction=direction) is None
    rng = np.random.default_rng(7)
    for _ in range(300):  # wider than Poisson: the series' own dispersion widens the test
        series = np.clip(rng.normal(200, 40, 61), 0, None).tolist()
        assert judge(window=series[-1:], short=series[:60], long=None, direction="spike") is None
        assert judge(window=series[-1:], short=series[:60], long=None, direction="drop") is None


def test_quiet_series_below_minimum_volume_never_fires():
    assert judge(window=[4], short=noisy(0.3), long=None, direction="spike") is None
    assert judge(window=[0], short=noisy(3), long=None, direction="drop") is None  # 3 expected < 5
    # a bigger jump on the same quiet series does fire
    assert judge(window=[12], short=noisy(0.3), long=None, direction="spike") is not None


def test_the_end_of_a_spike_is_not_a_drop():
    """After an hour at 10× the usual rate, the short baseline is the spike; the day's baseline is not."""
    spike_hour, day = noisy(100), noisy(10, n=1440)
    assert judge(window=[10], short=spike_hour, long=None, direction="drop") is not None  # short alone
    assert judge(window=[10], short=spike_hour, long=day, direction="drop") is None


# --- end to end ----------------------------------------------------------------------------------

NOW = datetime(2026, 3, 20, 12, 0, 30, tzinfo=UTC)
LAST = datetime(2026, 3, 20, 11, 59, tzinfo=UTC)  # the latest complete minute at NOW


def per_minute(counts: dict[datetime, int], event_type: str = "ib_call_logged") -> list[dict]:
    events = []
    for minute, n in counts.items():
        for i in range(n):
            ts = (minute + timedelta(seconds=i % 60)).isoformat()
            if event_type == "ib_call_logged":
                events.append(event(event_type, student_id=f"stu_{i % 10}", timestamp=ts))
            else:
                events.append(event(event_type, student_id=f"stu_{i % 10}", health_score=80, timestamp=ts))
    return events


def hour_of(n: int, *, before: datetime = LAST, minutes: int = 61) -> dict[datetime, int]:
    return {before - timedelta(minutes=m): n for m in range(1, minutes + 1)}


def ingest(post, drain, events: list[dict]) -> None:
    for start in range(0, len(events), 500):
        assert post({"events": events[start : start + 500]}).status_code == 202
    drain()


@pytest.mark.django_db
def test_ib_call_spike_raises_a_rate_anomaly_once_per_minute(post, drain):
    counts = {**hour_of(6), LAST: 80}
    with time_machine.travel(NOW, tick=False):
        ingest(post, drain, per_minute(counts) + per_minute(hour_of(6), "customer_health_update"))
        sweep.apply()
        sweep.apply()  # the same minute again: not counted twice
    alert = Alert.objects.get(type="rate_anomaly", entity_id="ib_calls")
    assert (alert.entity_type, alert.severity) == ("global", "critical")
    d = alert.details
    assert d["observed"] == 80 and d["expected"] == pytest.approx(6, abs=0.5) and d["z"] >= 10
    assert d["direction"] == "spike" and d["window_minutes"] == 1 and d["minute"] == LAST.isoformat()
    assert d["by"] == "event time" and alert.occurrences == 1
    # back to 6 calls a minute: once the burst has left the widest window (15 minutes), it is seen clear
    later = {LAST + timedelta(minutes=m): 6 for m in range(1, 16)}
    with time_machine.travel(NOW + timedelta(minutes=15), tick=False):
        ingest(post, drain, per_minute(later) + per_minute(later, "customer_health_update"))
        sweep.apply()
    alert.refresh_from_db()
    assert alert.clear_since == NOW + timedelta(minutes=15) and alert.occurrences == 1
    assert Alert.objects.filter(type="rate_anomaly", entity_id="ib_calls").count() == 1


@pytest.mark.django_db
def test_a_minute_written_by_batches_in_different_shards_is_judged_on_its_sum(post, drain, monkeypatch):
    """The spike minute's calls arrive in two batches that add to two shards' rows: the detector sees
    the minute's sum (80), not the last row it read (40)."""
    from metrics.services import buckets

    with time_machine.travel(NOW, tick=False):
        ingest(post, drain, per_minute(hour_of(6)) + per_minute(hour_of(6), "customer_health_update"))
        half = per_minute({LAST: 80})
        for shard, part in ((2, half[:40]), (6, half[40:])):
            monkeypatch.setattr(buckets, "minute_shard", lambda shard=shard: shard)
            ingest(post, drain, part)
        sweep.apply()
    d = Alert.objects.get(type="rate_anomaly", entity_id="ib_calls").details
    assert d["observed"] == 80 and d["expected"] == pytest.approx(6, abs=0.5)


@pytest.mark.django_db
def test_no_anomaly_without_enough_history(post, drain):
    """A fresh install: 30 minutes of history are fewer than the 45 observed minutes a baseline needs."""
    counts = {**hour_of(6, minutes=30), LAST: 80}
    with time_machine.travel(NOW, tick=False):
        ingest(post, drain, per_minute(counts))
        sweep.apply()
    assert not Alert.objects.filter(type="rate_anomaly").exists()


@pytest.mark.django_db
def test_an_outage_is_a_gap_not_a_drop(post, drain):
    """Nothing at all for 10 minutes (a restart, an upstream outage): no drop while it lasts, and the
    first minutes after it are judged against the hour before it, not against the zeros."""
    counts = hour_of(20, before=LAST - timedelta(minutes=10))
    with time_machine.travel(NOW, tick=False):
        ingest(post, drain, per_minute(counts))
        sweep.apply()
    assert not Alert.objects.filter(type="rate_anomaly").exists(), Alert.objects.values_list("message")
    after = {LAST + timedelta(minutes=m): 20 for m in range(1, 4)}
    for m in range(1, 4):
        with time_machine.travel(NOW + timedelta(minutes=m), tick=False):
            ingest(
                post, drain, per_minute({k: v for k, v in after.items() if k == LAST + timedelta(minutes=m)})
            )
            sweep.apply()
    assert not Alert.objects.filter(type="rate_anomaly").exists()


@pytest.mark.django_db
def test_a_quiet_marketplaces_outage_is_a_gap_too(post, drain, settings):
    """At 2 events a minute an empty minute is chance, but 15 in a row are an outage: still not a drop."""
    settings.ALERT_ANOMALY_MIN_VOLUME = 3
    counts = {**hour_of(2, before=LAST - timedelta(minutes=15), minutes=120), LAST: 2}  # back after 15
    with time_machine.travel(NOW, tick=False):
        ingest(post, drain, per_minute(counts, "customer_health_update"))
        sweep.apply()
    assert not Alert.objects.filter(type="rate_anomaly").exists(), Alert.objects.values_list("message")


@pytest.mark.django_db
def test_a_backfill_lands_in_the_minutes_it_belongs_to(post, drain):
    """Seven hours of history arriving in one minute is not an ingest-volume spike: volume is judged by
    event time, and the backfill only fills past minutes."""
    history = hour_of(10, minutes=7 * 60)
    with time_machine.travel(NOW, tick=False):
        ingest(post, drain, per_minute(history, "customer_health_update"))
        sweep.apply()
    assert not Alert.objects.filter(type="rate_anomaly").exists()


@pytest.mark.django_db
def test_a_minute_is_evaluated_once_even_by_sweeps_in_other_processes(post, drain):
    """Each worker process has its own local cache: the once-a-minute guard must not live there."""
    counts = {**hour_of(6), LAST: 80}
    with time_machine.travel(NOW, tick=False):
        ingest(post, drain, per_minute(counts))
        sweep.apply()
        cache.clear()  # what a sweep in another process sees of this one's cache: nothing
        sweep.apply()
    assert Alert.objects.get(type="rate_anomaly", entity_id="ib_calls").occurrences == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_evaluate_a_minute_once(post, drain):
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("concurrent transactions: PostgreSQL")
    counts = {**hour_of(6), LAST: 80}
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
        ingest(post, drain, per_minute(counts))
        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors
    alert = Alert.objects.get(type="rate_anomaly", entity_id="ib_calls")
    assert alert.occurrences == 1 and alert.transitions.count() == 1
