"""Each scenario, run by `manage.py simulate` through the real pipeline (stream → process_batch →
rules, then the periodic alert sweep), raises the alerts it exists to demonstrate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command

from alerts.models import Alert
from ingest.worker import drain
from simulator.population import (
    SHORTAGE_CELL,
    SPIKE_REASON,
    SPIKE_START,
    EventFactory,
    Population,
)

pytestmark = pytest.mark.django_db(transaction=True)

NOW = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)  # on a minute boundary
SEED, STUDENTS, TUTORS = 11, 40, 10


def simulate(scenario: str, *, events: int, days: float) -> None:
    """`events` events spread over the `days` before NOW, published and processed at NOW."""
    with time_machine.travel(NOW, tick=False):
        call_command(
            "simulate",
            "--scenario",
            scenario,
            "--streams",
            "1",
            "--events-per-stream",
            str(events),
            "--days",
            str(days),
            "--students",
            str(STUDENTS),
            "--tutors",
            str(TUTORS),
            "--seed",
            str(SEED),
            "--batch-size",
            "500",
        )
        drain(max_seconds=60)


def sweep(at: datetime) -> None:
    from pipeline.tasks import sweep as sweep_task

    with time_machine.travel(at, tick=False):
        sweep_task.apply()


def cohort() -> set[str]:
    pop = Population.build(seed=SEED, students=STUDENTS, tutors=TUTORS)
    return EventFactory(pop, seed=SEED, scenario="churn_wave").cohort


def alerted(alert_type: str, **filters) -> set[str]:
    return set(Alert.objects.filter(type=alert_type, **filters).values_list("entity_id", flat=True))


def test_churn_wave_puts_exactly_the_cohort_at_critical_risk():
    simulate("churn_wave", events=2000, days=28)
    sweep(NOW)
    members = cohort()
    low = alerted("low_health_score")
    assert members and low == members, (members, low)  # precision and recall 1 on this small run
    assert alerted("low_health_score", severity="critical") == members
    # a velocity alarm, if any, is the wave's: never a steady student's quiet week
    assert alerted("velocity_drop") <= members
    from metrics.models import StudentSnapshot

    at_risk = set(StudentSnapshot.objects.filter(health_score__lt=70).values_list("student_id", flat=True))
    assert at_risk == members  # the KPI's set and the alerts' set are one


def test_ib_spike_raises_a_rate_anomaly_on_ib_calls(settings):
    settings.ALERT_ANOMALY_WINDOW_MINUTES = 20
    settings.ALERT_ANOMALY_MIN_HISTORY_MINUTES = 15
    span = 40  # minutes of history, 40 events a minute; the burst starts at 80 % (NOW − 8 min)
    simulate("ib_spike", events=span * 40, days=span / 1440)
    burst = NOW - timedelta(minutes=round(span * (1 - SPIKE_START)))
    sweep(burst + timedelta(minutes=1, seconds=5))  # the sweep that runs just after the burst's first minute
    alert = Alert.objects.get(type="rate_anomaly", entity_id="ib_calls")
    d = alert.details
    assert d["direction"] == "spike" and d["minute"] == burst.isoformat()
    assert d["observed"] > 3 * d["expected"] and d["z"] >= settings.ALERT_ANOMALY_Z_WARNING
    assert not Alert.objects.filter(type="rate_anomaly").exclude(entity_id="ib_calls").exists()
    # and the calls are for one reason
    from ingest.models import Event

    reasons = [
        e.payload.get("reason")
        for e in Event.objects.filter(
            event_type="ib_call_logged", occurred_at__gte=burst, occurred_at__lt=burst + timedelta(minutes=1)
        )
    ]
    assert reasons.count(SPIKE_REASON) > len(reasons) / 2


def test_tutor_shortage_raises_a_critical_imbalance_for_the_cell():
    simulate("tutor_shortage", events=1500, days=2)
    sweep(NOW)
    subject, region = SHORTAGE_CELL
    alert = Alert.objects.get(type="supply_demand_imbalance", entity_id=f"{subject}|{region}")
    assert alert.severity == "critical" and alert.status == "open"
    assert alert.details["available_tutors"] == 0
    assert not Alert.objects.filter(type="supply_demand_imbalance", severity="critical").exclude(pk=alert.pk)


def test_steady_raises_no_critical_alert():
    simulate("steady", events=2000, days=28)
    sweep(NOW)
    assert Alert.objects.exists()  # a living marketplace has warnings...
    assert not Alert.objects.filter(severity="critical").exists(), list(
        Alert.objects.filter(severity="critical").values_list("type", "entity_id", "message")
    )
