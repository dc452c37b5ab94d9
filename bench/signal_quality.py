"""Signal quality: each simulator scenario through the real pipeline, scored against the simulator's truth.

Each scenario runs in a process and a PostgreSQL database of its own, on a simulated clock (time-machine):

1. history — `--history-days` of the steady marketplace, delivered at once as a backfill (validated by the
   ingest schemas, then `pipeline.batch.process_batch` in batches of 500, all processed at the live start);
2. live — `--live-days` of the scenario, in ticks of `--tick` simulated seconds: the tick's events
   (Poisson arrivals at the population's rate × the scenario's intensity) are processed at the tick's
   end, then the periodic tasks run as beat would run them (alert sweep every tick, stale refresh every
   5 minutes, riskiest insights every 15 minutes). The scenario's progress (0 → 1) runs over the live span.
3. faults, in every scenario, before any scenario starts: a restart (nothing processed for 10 minutes while
   events queue, then the backlog at once), an upstream outage (no events for 15 minutes), and a backfill
   (a quarter of the last 6 hours' events withheld, then delivered at once by event time).

Ground truth comes from the simulator itself: the churn cohort and its onset (`churn_wave`), the IB spike
window (`ib_spike`), the shortage cell and when it starts (`tutor_shortage`), the overloaded tutors and
the students whose IB-call propensity is high (profile `churning`, or the cohort once the wave starts).

Printed: per scenario and alert type, the alerts raised during the live span, per 100 active students per
day, criticals, precision and recall against the truth, and the time from the truth's onset to the first
alert; the at-risk set against the cohort; notifications sent per day; risk calibration (Brier score,
reliability table) and the rank agreement with DOMAIN's sanity formula.

    .venv/bin/python bench/signal_quality.py                         # 4 scenarios, 3,000 students, 30 + 3 days
    .venv/bin/python bench/signal_quality.py --scenario churn_wave   # one
    .venv/bin/python bench/signal_quality.py --smoke                 # 300 students, 3 + 1 days (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


SCENARIOS = ("steady", "churn_wave", "ib_spike", "tutor_shortage")
LIVE_START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
# Fault injections, as fractions of the live span (every scenario's own change starts at 0.5 or later).
RESTART_AT, RESTART_MINUTES = 0.20, 10
OUTAGE_AT, OUTAGE_MINUTES = 0.30, 15
BACKFILL_AT, BACKFILL_HOURS, BACKFILL_SHARE = 0.40, 6, 0.25
ALERT_TYPES = (
    "low_health_score",
    "high_ib_call_frequency",
    "first_session_failed",
    "velocity_drop",
    "tutor_overload",
    "supply_demand_imbalance",
    "rate_anomaly",
)


@dataclass
class Config:
    scenario: str
    students: int
    tutors: int
    history_days: float
    live_days: float
    seed: int
    tick: int
    database: str


@dataclass
class Truth:
    live_start: datetime
    live_end: datetime
    onset: datetime | None  # when the scenario's change starts (None: steady)
    cohort: set[str] = field(default_factory=set)
    high_ib: set[str] = field(default_factory=set)
    overloaded: set[str] = field(default_factory=set)
    shortage_cell: str = ""
    spike_end: datetime | None = None
    faults: list[tuple[str, datetime, datetime]] = field(default_factory=list)


def _at(cfg: Config, fraction: float) -> datetime:
    return LIVE_START + timedelta(days=cfg.live_days) * fraction


def truth_for(cfg: Config, factory) -> Truth:
    from simulator.population import (
        CHURN_START,
        SHORTAGE_CELL,
        SHORTAGE_START,
        SPIKE_END,
        SPIKE_START,
    )

    pop = factory.pop
    onset = {
        "churn_wave": CHURN_START,
        "ib_spike": SPIKE_START,
        "tutor_shortage": SHORTAGE_START,
    }.get(cfg.scenario)
    t = Truth(
        live_start=LIVE_START,
        live_end=_at(cfg, 1.0),
        onset=_at(cfg, onset) if onset is not None else None,
        overloaded={tt.id for tt in pop.tutors if tt.profile == "overloaded"},
        faults=[
            ("restart", _at(cfg, RESTART_AT), _at(cfg, RESTART_AT) + timedelta(minutes=RESTART_MINUTES)),
            ("outage", _at(cfg, OUTAGE_AT), _at(cfg, OUTAGE_AT) + timedelta(minutes=OUTAGE_MINUTES)),
            ("backfill", _at(cfg, BACKFILL_AT) - timedelta(hours=BACKFILL_HOURS), _at(cfg, BACKFILL_AT)),
        ],
    )
    profile_high_ib = {s.id for s in pop.students if s.profile == "churning"}
    if cfg.scenario == "churn_wave":
        t.cohort = set(factory.cohort)
        t.high_ib = profile_high_ib | t.cohort
    else:
        t.high_ib = profile_high_ib
    if cfg.scenario == "tutor_shortage":
        t.shortage_cell = f"{SHORTAGE_CELL[0]}|{SHORTAGE_CELL[1]}"
    if cfg.scenario == "ib_spike":
        t.spike_end = _at(cfg, SPIKE_END)
    return t


# --- driving the pipeline on a simulated clock --------------------------------------------------------


class Driver:
    """Feeds events through validation and process_batch at a simulated `now`, and runs beat's tasks."""

    def __init__(self, cfg: Config):
        import time_machine

        from ingest.services import events_validate
        from insights.tasks import score_riskiest
        from pipeline.batch import process_batch
        from pipeline.tasks import refresh_stale, sweep

        self.cfg = cfg
        self.time_machine = time_machine
        self.process_batch, self.validate = process_batch, events_validate
        self.sweep, self.refresh_stale, self.score_riskiest = sweep, refresh_stale, score_riskiest
        self.next_refresh = self.next_insights = self.next_analyze = LIVE_START
        self.processed = 0

    def process(self, events: list[dict], now: datetime) -> None:
        with self.time_machine.travel(now, tick=False):
            for start in range(0, len(events), 500):
                chunk = events[start : start + 500]
                outcome = self.validate({"events": chunk}, now=now)
                if outcome.rejected:
                    raise SystemExit(f"the simulator produced invalid events: {outcome.results[:3]}")
                self.process_batch(outcome.accepted, now=now)
                self.processed += len(chunk)

    def analyze(self) -> None:
        """What autovacuum does on a production server (this machine's PostgreSQL runs with it off):
        fresh planner statistics, so the bench measures plans a production database would use."""
        from django.db import connection

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE")

    def beat(self, now: datetime) -> None:
        if now >= self.next_analyze:
            self.analyze()
            self.next_analyze = now + timedelta(hours=6)
        with self.time_machine.travel(now, tick=False):
            if now >= self.next_refresh:
                self.refresh_stale.apply(throw=True)
                self.next_refresh = now + timedelta(seconds=300)
            self.sweep.apply(throw=True)
            if now >= self.next_insights:
                self.score_riskiest.apply(throw=True)
                self.next_insights = now + timedelta(seconds=900)


def events_per_day(students: int) -> float:
    from simulator.population import STUDENT_EVENTS_PER_DAY

    return students * STUDENT_EVENTS_PER_DAY


def history(cfg: Config, factory, driver: Driver, rng) -> None:
    """The steady marketplace before the live start, delivered at once (a backfill, as on a first install)."""
    start = LIVE_START - timedelta(days=cfg.history_days)
    n = int(events_per_day(cfg.students) * cfg.history_days)
    span = (LIVE_START - start).total_seconds()
    offsets = sorted(rng.uniform(0, span, size=n))
    events = [factory.next_event(start + timedelta(seconds=float(o)), progress=0.0) for o in offsets]
    t0 = time.perf_counter()
    driver.process(events, LIVE_START)
    print(
        f"  history: {n:,} events over {cfg.history_days:g} days in {time.perf_counter() - t0:.0f}s",
        file=sys.stderr,
        flush=True,
    )


def live(cfg: Config, factory, driver: Driver, truth: Truth, rng, checkpoints: dict) -> None:
    per_second = events_per_day(cfg.students) / 86400
    span = truth.live_end - LIVE_START
    tick = timedelta(seconds=cfg.tick)
    (_, restart_a, restart_b), (_, outage_a, outage_b), (_, backfill_a, backfill_b) = truth.faults
    queued: list[dict] = []  # events waiting while the system is down
    withheld: list[dict] = []  # the backfill's share, delivered at backfill_b
    now = LIVE_START
    wall = time.perf_counter()
    last_report = wall
    pending_checks = sorted(checkpoints.items(), key=lambda kv: kv[1])
    while now < truth.live_end:
        end = now + tick
        progress = (now - LIVE_START) / span
        events = []
        if not outage_a <= now < outage_b:
            n = rng.poisson(per_second * cfg.tick * factory.intensity(progress))
            for o in sorted(rng.uniform(0, cfg.tick, size=n)):
                events.append(factory.next_event(now + timedelta(seconds=float(o)), progress=progress))
        if backfill_a <= now < backfill_b:
            held = rng.random(len(events)) < BACKFILL_SHARE
            withheld.extend(e for e, h in zip(events, held, strict=True) if h)
            events = [e for e, h in zip(events, held, strict=True) if not h]
        if restart_a <= now < restart_b:
            queued.extend(events)  # accepted by the API, nothing processes them: no worker, no beat
            now = end
            continue
        if queued:
            events, queued = queued + events, []
        if withheld and end >= backfill_b:
            events, withheld = events + withheld, []
        driver.process(events, end)
        driver.beat(end)
        now = end
        while pending_checks and now >= pending_checks[0][1]:
            name, _ = pending_checks.pop(0)
            checkpoints[name] = (checkpoints[name], at_risk_now(now))
        if time.perf_counter() - last_report > 15:
            last_report = time.perf_counter()
            done = (now - LIVE_START) / span
            print(
                f"  live {done:5.1%}: {driver.processed:,} events, "
                f"{driver.processed / (last_report - wall):,.0f}/s",
                file=sys.stderr,
                flush=True,
            )


# --- reading what the product says ---------------------------------------------------------------------


def at_risk_now(now: datetime) -> set[str]:
    """The students the product calls at risk at `now`: the set behind the KPI card, over the 7-day range."""
    from dashboard.selectors import students_at_risk_ids

    return set(students_at_risk_ids(now=now, range_key="7d"))


def _rate(n: float, active: int, days: float) -> float:
    return round(n / (active / 100) / days, 2) if active and days else 0.0


def _pr(found: set[str], truth: set[str]) -> tuple[float | None, float | None]:
    tp = len(found & truth)
    precision = tp / len(found) if found else None
    recall = tp / len(truth) if truth else None
    return precision, recall


def _hours(delta: timedelta | None) -> float | None:
    return None if delta is None else round(delta.total_seconds() / 3600, 2)


def score(cfg: Config, truth: Truth, checkpoints: dict) -> dict:
    from django.db.models import Q

    from alerts.models import Alert, AlertDelivery, AlertTransition
    from insights.models import Insight
    from metrics.models import StudentHourly

    live_days = cfg.live_days
    active = (
        StudentHourly.objects.filter(hour__gte=LIVE_START, hour__lt=truth.live_end)
        .values("student_id")
        .distinct()
        .count()
    )
    alerts = list(
        Alert.objects.filter(first_seen__lt=truth.live_end).filter(
            Q(closed_at__isnull=True) | Q(closed_at__gte=LIVE_START)
        )
    )
    # The history's backfill is processed at LIVE_START: what it raised is open when the live span starts.
    new = [a for a in alerts if a.first_seen > LIVE_START]
    escalations = AlertTransition.objects.filter(
        at__gte=LIVE_START, note__startswith="escalated", alert__in=[a.pk for a in alerts]
    ).values_list("alert_id", "at")
    escalated_at: dict[int, list[datetime]] = {}
    for alert_id, at in escalations:
        escalated_at.setdefault(alert_id, []).append(at)
    rows = []
    for alert_type in ALERT_TYPES:
        of_type = [a for a in alerts if a.type == alert_type]
        new_of_type = [a for a in new if a.type == alert_type]
        row = {
            "type": alert_type,
            "new": len(new_of_type),
            "per_100_day": _rate(len(new_of_type), active, live_days),
            "critical": sum(a.severity == "critical" for a in new_of_type)
            + sum(1 for a in of_type if a.first_seen <= LIVE_START and a.severity == "critical"),
            "open_at_start": sum(1 for a in of_type if a.first_seen <= LIVE_START),
            "precision": None,
            "recall": None,
            "first_alert_h": None,
        }
        found = {a.entity_id for a in of_type}
        truth_set: set[str] | None = None
        onset = truth.onset
        if alert_type in ("low_health_score", "velocity_drop"):
            truth_set = truth.cohort
            found = {a.entity_id for a in of_type if onset is None or a.first_seen >= onset or truth.cohort}
        elif alert_type == "high_ib_call_frequency":
            truth_set = truth.high_ib
        elif alert_type == "tutor_overload":
            truth_set = truth.overloaded
        elif alert_type == "supply_demand_imbalance":
            truth_set = {truth.shortage_cell} if truth.shortage_cell else set()
        elif alert_type == "rate_anomaly":
            # the spike's calls are also more events: ingest volume rises with them
            spike = {"ib_calls", "ingest_volume"} if cfg.scenario == "ib_spike" else set()
            truth_set = spike
            # an anomaly alert counts where it fired: inside the spike window it is the spike
            in_spike = {
                a.entity_id
                for a in of_type
                if truth.spike_end
                and (
                    truth.onset <= a.first_seen < truth.spike_end
                    or any(truth.onset <= t < truth.spike_end for t in escalated_at.get(a.pk, []))
                )
            }
            row["outside_truth"] = sum(
                1
                for a in of_type
                if not (a.entity_id in spike and a.entity_id in in_spike)
                and a.first_seen >= LIVE_START - timedelta(days=1)
            )
            row["during_faults"] = sum(
                1
                for a in new_of_type
                if any(fa <= a.first_seen <= fb + timedelta(hours=1) for _, fa, fb in truth.faults)
            )
            found = in_spike | {a.entity_id for a in of_type if a.entity_id not in spike}
            if truth.spike_end:  # how long after the spike began a channel was first told of it
                told = (
                    AlertDelivery.objects.filter(
                        alert__type="rate_anomaly",
                        alert__entity_id="ib_calls",
                        created_at__gte=truth.onset,
                        created_at__lt=truth.spike_end,
                    )
                    .order_by("created_at")
                    .values_list("created_at", flat=True)
                    .first()
                )
                row["notified_min"] = round((told - truth.onset).total_seconds() / 60, 1) if told else None
        if truth_set is not None:
            row["precision"], row["recall"] = _pr(found, truth_set)
            if row["precision"] is None and not truth_set:
                row["precision"] = None
        if onset is not None and truth_set:
            firsts = []
            for a in of_type:
                if a.entity_id not in truth_set:
                    continue
                times = [a.first_seen] + escalated_at.get(a.pk, [])
                after = [t for t in times if t >= onset]
                if after:
                    firsts.append(min(after) - onset)
            row["first_alert_h"] = _hours(min(firsts)) if firsts else None
            if len(truth_set) > 1 and firsts:
                firsts.sort()
                row["median_alert_h"] = _hours(firsts[len(firsts) // 2])
                row["within_1d"] = round(sum(f <= timedelta(days=1) for f in firsts) / len(truth_set), 3)
        rows.append(row)
    anomalies = [
        {
            "first_seen": a.first_seen.isoformat(),
            "series": a.entity_id,
            "severity": a.severity,
            "message": a.message,
        }
        for a in alerts
        if a.type == "rate_anomaly"
    ]
    deliveries = AlertDelivery.objects.filter(created_at__gte=LIVE_START, created_at__lt=truth.live_end)
    messages = _messages(deliveries)
    # Insights scored in the live span (each a new row and a push to open dashboards), and those scored
    # for alerts (raised, escalated or repeated) rather than by the riskiest-insights beat.
    scored = Insight.objects.filter(scored_at__gte=LIVE_START, scored_at__lt=truth.live_end, cached_from=None)
    insights, for_alerts = scored.count(), scored.filter(alert_id__isnull=False).count()
    evidence = evidence_since(truth, checkpoints)
    from metrics.models import StudentSnapshot

    calls = dict(StudentSnapshot.objects.values_list("student_id", "ib_calls_14d"))
    ib_sweep = []
    for threshold in range(2, 8):  # what ALERT_IB_CALLS_14D would flag at the end, against the truth
        flagged = {sid for sid, n in calls.items() if n >= threshold}
        p, r = _pr(flagged, truth.high_ib)
        ib_sweep.append({"threshold": threshold, "flagged": len(flagged), "precision": p, "recall": r})
    risk = {}
    for name, reached in checkpoints.items():
        if not isinstance(reached, tuple):
            continue  # beyond the live span (a short run)
        when, found = reached
        p, r = _pr(found, truth.cohort) if truth.cohort else (None, None)
        risk[name] = {
            "at": when.isoformat(),
            "at_risk": len(found),
            "share_of_active": round(len(found) / active, 3) if active else None,
            "precision": p,
            "recall": r,
        }
    return {
        "scenario": cfg.scenario,
        "students": cfg.students,
        "active": active,
        "live_days": live_days,
        "new_alerts": len(new),
        "new_per_100_day": _rate(len(new), active, live_days),
        "critical_new": sum(a.severity == "critical" for a in new),
        "open_at_end": sum(1 for a in alerts if a.status in ("open", "acknowledged")),
        "deliveries": deliveries.count(),
        "notifications": messages,
        "notifications_per_day": round(messages / live_days, 1),
        "insights_per_day": round(insights / live_days, 1),
        "alert_insights_per_day": round(for_alerts / live_days, 1),
        "anomalies": anomalies,
        "ib_threshold_sweep": ib_sweep,
        "evidence_ceiling": evidence,
        "types": rows,
        "at_risk": risk,
        "calibration": calibration(truth, truth.live_end),
    }


def _messages(deliveries) -> int:
    """Notifications sent: delivery rows grouped as the sender groups them (one message per group)."""
    from alerts.delivery import _GROUP_FIELDS, _groups

    return len(_groups(deliveries.values_list(*_GROUP_FIELDS)))


def evidence_since(truth: Truth, checkpoints: dict) -> dict:
    """The recall no detector can beat: the share of the cohort that sent any event after the onset,
    by each checkpoint (nothing can be known of a student who has been silent since)."""
    from ingest.models import Event

    if not truth.cohort or truth.onset is None:
        return {}
    out = {}
    for name, reached in checkpoints.items():
        if not isinstance(reached, tuple):
            continue
        when = reached[0]
        heard = set(
            Event.objects.filter(
                student_id__in=truth.cohort, occurred_at__gte=truth.onset, occurred_at__lt=when
            ).values_list("student_id", flat=True)
        )
        readings = set(
            Event.objects.filter(
                student_id__in=truth.cohort,
                event_type="customer_health_update",
                occurred_at__gte=truth.onset,
                occurred_at__lt=when,
            ).values_list("student_id", flat=True)
        )
        out[name] = {
            "any_event": round(len(heard) / len(truth.cohort), 3),
            "platform_reading": round(len(readings) / len(truth.cohort), 3),
        }
    return out


def calibration(truth: Truth, now: datetime) -> dict:
    """Risk of every active student (as the product scores it) against the truth (in the cohort or not):
    Brier score, a reliability table, and the rank agreement with DOMAIN's sanity formula."""
    import numpy as np

    from insights.services import student_risks

    rows = student_risks(now=now)
    if not rows:
        return {}
    ids = [r[0] for r in rows]
    risk = np.array([r[1] for r in rows], dtype=float)
    sanity = np.array([r[2] for r in rows], dtype=float)
    label = np.array([1.0 if i in truth.cohort else 0.0 for i in ids])
    bins = []
    for lo in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9):
        hi = {0.0: 0.1, 0.1: 0.2, 0.2: 0.3, 0.3: 0.5, 0.5: 0.7, 0.7: 0.9, 0.9: 1.01}[lo]
        mask = (risk >= lo) & (risk < hi)
        if mask.any():
            bins.append(
                {
                    "bin": f"{lo:.1f}-{min(hi, 1.0):.1f}",
                    "n": int(mask.sum()),
                    "mean_risk": round(float(risk[mask].mean()), 3),
                    "observed": round(float(label[mask].mean()), 3),
                }
            )

    def ranks(x):
        return np.argsort(np.argsort(x)).astype(float)

    rho = float(np.corrcoef(ranks(risk), ranks(sanity))[0, 1]) if len(ids) > 2 else math.nan
    return {
        "n": len(ids),
        "brier": round(float(((risk - label) ** 2).mean()), 4),
        "brier_base": round(float(((label.mean() - label) ** 2).mean()), 4),
        "max_risk": round(float(risk.max()), 3),
        "spearman_sanity": round(rho, 3),
        "reliability": bins,
    }


def run_one(cfg: Config) -> dict:
    import numpy as np
    from aggregate import drop_database, setup_django

    setup_django(cfg.database)
    try:
        from alerts.models import NotificationChannel
        from simulator.population import CHURN_START, EventFactory, Population

        for name, severity in (("on-call", "critical"), ("ops team", "warning")):
            NotificationChannel.objects.create(
                name=name, kind="email", min_severity=severity, config={"recipients": ["ops@example.com"]}
            )
        pop = Population.build(seed=cfg.seed, students=cfg.students, tutors=cfg.tutors)
        factory = EventFactory(pop, seed=cfg.seed, scenario=cfg.scenario)
        truth = truth_for(cfg, factory)
        rng = np.random.default_rng(cfg.seed)
        driver = Driver(cfg)
        history(cfg, factory, driver, rng)
        checkpoints = {"end": truth.live_end - timedelta(seconds=cfg.tick)}
        if cfg.scenario == "churn_wave":
            for days in (1, 2, 3, 5):
                checkpoints[f"onset+{days}d"] = _at(cfg, CHURN_START) + timedelta(days=days)
        t0 = time.perf_counter()
        live(cfg, factory, driver, truth, rng, checkpoints)
        print(f"  live: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        return score(cfg, truth, checkpoints)
    finally:
        drop_database(cfg.database)


# --- the table -----------------------------------------------------------------------------------------


def _f(v, fmt="{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(results: list[dict]) -> None:
    print(
        f"{'scenario':<15}{'type':<25}{'new':>5}{'/100/d':>8}{'crit':>5}{'open0':>6}"
        f"{'prec':>6}{'recall':>7}{'1st h':>7}{'med h':>7}{'≤1d':>6}  notes"
    )
    for r in results:
        for t in r["types"]:
            if not (t["new"] or t["open_at_start"] or t["recall"]):
                continue
            notes = []
            if "outside_truth" in t:
                notes.append(f"outside truth {t['outside_truth']}, during faults {t['during_faults']}")
            if t.get("notified_min") is not None:
                notes.append(f"spike notified {t['notified_min']} min after it began")
            print(
                f"{r['scenario']:<15}{t['type']:<25}{t['new']:>5}{t['per_100_day']:>8.2f}{t['critical']:>5}"
                f"{t['open_at_start']:>6}{_f(t['precision']):>6}{_f(t['recall']):>7}"
                f"{_f(t['first_alert_h'], '{:.1f}'):>7}{_f(t.get('median_alert_h'), '{:.1f}'):>7}"
                f"{_f(t.get('within_1d')):>6}  {'; '.join(notes)}"
            )
        print(
            f"{r['scenario']:<15}{'ALL':<25}{r['new_alerts']:>5}{r['new_per_100_day']:>8.2f}"
            f"{r['critical_new']:>5}   open at end {r['open_at_end']}, active students {r['active']}, "
            f"notifications {r['notifications_per_day']}/day ({r['deliveries']} deliveries), "
            f"insights scored {r['insights_per_day']}/day ({r['alert_insights_per_day']}/day for alerts)"
        )
        for name, a in sorted(r["at_risk"].items(), key=lambda kv: kv[1]["at"]):
            ceiling = r.get("evidence_ceiling", {}).get(name)
            heard = (
                f"  (cohort heard from since onset: {ceiling['any_event']:.0%}, a platform reading: "
                f"{ceiling['platform_reading']:.0%})"
                if ceiling
                else ""
            )
            print(
                f"{'':<15}at risk @ {name:<14} {a['at_risk']:>5} ({_f(a['share_of_active'], '{:.1%}')} of active)"
                f"  precision {_f(a['precision'])} recall {_f(a['recall'])}{heard}"
            )
        sweep = r.get("ib_threshold_sweep")
        if sweep:
            print(
                f"{'':<15}high IB calls in 14 days ≥ t at the end, against the high-propensity truth: "
                + "  ".join(
                    f"t={x['threshold']}: {x['flagged']} P {_f(x['precision'])} R {_f(x['recall'])}"
                    for x in sweep
                )
            )
        for an in r.get("anomalies", []):
            print(f"{'':<15}anomaly {an['first_seen'][:16]} {an['severity']:<8} {an['message']}")
        c = r["calibration"]
        if c:
            rel = "  ".join(
                f"{b['bin']}: n={b['n']} risk {b['mean_risk']:.2f} obs {b['observed']:.2f}"
                for b in c["reliability"]
            )
            print(
                f"{'':<15}risk: Brier {c['brier']:.4f} (base rate {c['brier_base']:.4f}), max {c['max_risk']:.2f}, "
                f"Spearman vs sanity formula {c['spearman_sanity']:.2f}\n{'':<15}reliability {rel}"
            )
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--students", type=int, default=3000)
    parser.add_argument("--tutors", type=int, default=None, help="default: students / 10")
    parser.add_argument("--history-days", type=float, default=30)
    parser.add_argument("--live-days", type=float, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tick", type=int, default=60, help="simulated seconds per processing tick")
    parser.add_argument("--jobs", type=int, default=2, help="scenarios run at once")
    parser.add_argument("--database", default="iops_bench_signal")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--smoke", action="store_true", help="300 students, 3 + 1 days")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.students, args.history_days, args.live_days = 300, 3, 1
    tutors = args.tutors or max(5, args.students // 10)
    if args.child:
        cfg = Config(
            args.scenario,
            args.students,
            tutors,
            args.history_days,
            args.live_days,
            args.seed,
            args.tick,
            args.database,
        )
        print(json.dumps(run_one(cfg), default=str))
        return
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    print(
        f"signal: {args.students:,} students, {tutors:,} tutors, seed {args.seed}, "
        f"{args.history_days:g} days of history (backfilled) + {args.live_days:g} live days, "
        f"tick {args.tick}s; faults in every run: restart {RESTART_MINUTES} min, outage {OUTAGE_MINUTES} min, "
        f"backfill of {BACKFILL_SHARE:.0%} of {BACKFILL_HOURS} h",
        flush=True,
    )
    started = time.perf_counter()
    procs: list[tuple[str, subprocess.Popen]] = []
    results: dict[str, dict] = {}
    queue = list(scenarios)
    while queue or procs:
        while queue and len(procs) < max(1, args.jobs):
            name = queue.pop(0)
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--scenario",
                name,
                "--students",
                str(args.students),
                "--tutors",
                str(tutors),
                "--history-days",
                str(args.history_days),
                "--live-days",
                str(args.live_days),
                "--seed",
                str(args.seed),
                "--tick",
                str(args.tick),
                "--database",
                f"{args.database}_{name}",
            ]
            print(f"[{name}] started", file=sys.stderr, flush=True)
            procs.append((name, subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ)))
        for name, proc in list(procs):
            if proc.poll() is None:
                continue
            procs.remove((name, proc))
            out = proc.stdout.read() if proc.stdout else ""
            if proc.returncode != 0:
                raise SystemExit(f"[{name}] failed with exit {proc.returncode}")
            results[name] = json.loads(out.strip().splitlines()[-1])
            print(f"[{name}] done", file=sys.stderr, flush=True)
        time.sleep(0.5)
    ordered = [results[s] for s in scenarios]
    print_table(ordered)
    print(f"signal: {time.perf_counter() - started:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(ordered, indent=2, default=str))


if __name__ == "__main__":
    main()
