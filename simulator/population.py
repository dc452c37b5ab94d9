"""A persistent, reproducible marketplace population whose events are correlated over simulated time.

Every id is drawn once per seed, so students and tutors accumulate history and rules fire
realistically (the prototype drew a fresh random id per event). Each entity has a behaviour profile;
what it does at a moment of the run is a function of its profile, the scenario and the run's
progress (0 → 1 over the simulated span), so sessions, ratings, IB calls, availability, health
readings and supply–demand readings move together:

- a student's session share, IB-call propensity, success rate, ratings and the platform's health
  reading all come from the same state (a churning student books less, calls more, rates lower and
  is scored lower);
- a tutor's availability is what the supply–demand readings of its subject × region cells add up to;
- the platform's `balance_status` is derived from the scores it reports (never random).

Scenarios (`SCENARIOS`):
- steady: the marketplace as usual. Health readings stay ≥ 50 and every subject × region has a
  tutor, so it raises warnings at most, never a critical alert.
- churn_wave: a cohort (10 % of students, all engaged to begin with) collapses from 65 % of the
  run on, fully by 75 % (the last week of a month is all wave): sessions fall to ~5 %, IB calls
  rise, ratings and health (→ ~35) fall.
- ib_spike: from 80 % to 90 % of the run IB calls are ten times as frequent, mostly for one reason;
  then back to normal (the anomaly clears and auto-resolves).
- tutor_shortage: from half-way, the tutors of one subject × region (`SHORTAGE_CELL`) stop offering
  it while its demand doubles; by 70 % no tutor is left there.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate
from typing import Any

from faker import Faker

from metrics.vocabulary import IB_REASONS

SUBJECTS = [
    "Mathematics",
    "Physics",
    "Chemistry",
    "Biology",
    "English",
    "History",
    "Computer Science",
    "Spanish",
    "French",
]
REGIONS = ["northeast", "southeast", "midwest", "west", "southwest"]
TIMEZONES = {
    "northeast": "America/New_York",
    "southeast": "America/New_York",
    "midwest": "America/Chicago",
    "west": "America/Los_Angeles",
    "southwest": "America/Phoenix",
}
SCENARIOS = ("steady", "churn_wave", "ib_spike", "tutor_shortage")
SHORTAGE_CELL = ("Mathematics", "west")
SPIKE_REASON = "technical_problem"
MAX_OPEN_SESSIONS = 30  # sessions in progress at once per producer stream

# When each scenario's change starts (progress of the run) and how long its ramp takes.
CHURN_START, CHURN_RAMP = 0.65, 0.1
SPIKE_START, SPIKE_END = 0.8, 0.9
SHORTAGE_START, SHORTAGE_RAMP = 0.5, 0.2


@dataclass(frozen=True)
class StudentProfile:
    sessions: float  # relative share of bookings
    ib: float  # relative share of support calls
    success: float  # probability a session completes successfully
    rating: float  # mean rating the student gives
    health: float  # centre of the platform's health score


@dataclass(frozen=True)
class TutorProfile:
    capacity: float  # available hours relative to the hours the tutor is booked for
    popularity: float  # relative share of bookings
    success: float
    rating: float  # mean rating the tutor's sessions receive


STUDENT_PROFILES = {
    "engaged": StudentProfile(1.0, 0.5, 0.97, 4.6, 85),
    "drifting": StudentProfile(0.55, 1.0, 0.92, 4.0, 72),
    "churning": StudentProfile(0.3, 2.0, 0.85, 3.6, 62),
}
STUDENT_MIX = {"engaged": 70, "drifting": 20, "churning": 10}
TUTOR_PROFILES = {
    "reliable": TutorProfile(capacity=1.8, popularity=1.0, success=0.98, rating=4.6),
    "overloaded": TutorProfile(capacity=0.6, popularity=2.0, success=0.88, rating=3.4),
}
TUTOR_MIX = {"reliable": 85, "overloaded": 15}
# A marketplace's event rate is about one event per student per day (~2 sessions a week each, with
# their starts and completions, calls and readings); tutors are about a tenth of the students, so an
# average tutor teaches the ~20 hours a week their availability is drawn around. Callers that pace a
# population (the live simulator, bench/signal_quality.py) derive their rate or the population from these.
STUDENT_EVENTS_PER_DAY = 1.0
STUDENTS_PER_TUTOR = 10
HEALTH_FLOOR = 51.0  # outside churn_wave nobody is scored critical (< 50)


@dataclass
class Student:
    id: str
    name: str
    region: str
    subjects: list[str]
    profile: str
    health_offset: float = 0.0


@dataclass
class Tutor:
    id: str
    name: str
    region: str
    subjects: list[str]
    profile: str
    hours: float


@dataclass
class Population:
    seed: int
    students: list[Student] = field(default_factory=list)
    tutors: list[Tutor] = field(default_factory=list)

    @classmethod
    def build(cls, *, seed: int, students: int = 300, tutors: int = 60) -> Population:
        rng = random.Random(seed)
        names = _Names(seed)
        pop = cls(seed=seed)
        pop.students = [_draw_student(i, rng, names) for i in range(students)]
        pop.tutors = [_draw_tutor(i, rng, names) for i in range(tutors)]
        # Every subject × region has at least one tutor, so a steady marketplace has no empty cell.
        for region in REGIONS:
            local = [t for t in pop.tutors if t.region == region]
            for subject in SUBJECTS:
                if local and not any(subject in t.subjects for t in local):
                    min(local, key=lambda t: (len(t.subjects), t.id)).subjects.append(subject)
        # Available hours: what the tutor is booked for, times the profile's capacity (reliable tutors
        # have room to spare, overloaded ones are booked beyond what they offer).
        weights = {t.id: TUTOR_PROFILES[t.profile].popularity for t in pop.tutors}
        total = sum(weights.values()) or 1.0
        for t in pop.tutors:
            share = weights[t.id] / total * len(pop.tutors)
            hours = 20 * share * TUTOR_PROFILES[t.profile].capacity * rng.uniform(0.85, 1.15)
            t.hours = round(min(168.0, max(2.0, hours)), 1)
        return pop

    def cells(self) -> list[tuple[str, str]]:
        return [(s, r) for s in SUBJECTS for r in REGIONS]


def _draw_profile(rng: random.Random, mix: dict[str, int]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _draw_subjects(rng: random.Random, *, most: int) -> list[str]:
    return rng.sample(SUBJECTS, k=rng.randint(1, most))


def _draw_student(i: int, rng: random.Random, names: _Names) -> Student:
    profile = _draw_profile(rng, STUDENT_MIX)
    region = rng.choice(REGIONS)
    subjects = _draw_subjects(rng, most=3)
    offset = round(rng.uniform(-6, 6), 1)
    return Student(f"stu_{i + 1:05d}", names.next(), region, subjects, profile, health_offset=offset)


def _draw_tutor(i: int, rng: random.Random, names: _Names) -> Tutor:
    """Hours are set once every tutor is drawn (they depend on the others' popularity)."""
    profile = _draw_profile(rng, TUTOR_MIX)
    region = REGIONS[i % len(REGIONS)]  # round robin: every region has tutors
    return Tutor(f"tut_{i + 1:04d}", names.next(), region, _draw_subjects(rng, most=4), profile, hours=0.0)


class _Names:
    """Display names drawn from Faker's en_US name lists with a generator of their own (a population of
    170,000 — a live run at 2 events/s — is built in a second, not the minute of one Faker call each)."""

    def __init__(self, seed: int):
        provider = Faker().provider("faker.providers.person")
        self.first = sorted({*provider.first_names_female, *provider.first_names_male})
        self.last = sorted(provider.last_names)
        self.rng = random.Random(f"names-{seed}")

    def next(self) -> str:
        return f"{self.rng.choice(self.first)} {self.rng.choice(self.last)}"


def _clamp(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    return max(lo, min(hi, x))


class EventFactory:
    """Draws the next events for a population. Deterministic for a given seed, stream, time and progress.

    `next_event(now, progress)`: `now` is the event's timestamp, `progress` (0–1) the position in the
    run that drives the scenario. State (open sessions, counters) is per factory, never shared.
    """

    TYPE_WEIGHTS = {
        "session": 62,
        "ib_call_logged": 12,
        "customer_health_update": 12,
        "tutor_availability_updated": 7,
        "supply_demand_update": 7,
    }

    def __init__(self, population: Population, *, seed: int, scenario: str = "steady", stream: int = 0):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        self.pop = population
        self.rng = random.Random(seed * 1_000_003 + stream)
        self.scenario = scenario
        self.stream = stream
        # Sessions in progress, oldest first: (due to end at, scheduled minutes, the session's ids).
        self.open_sessions: list[tuple[datetime, int, dict[str, Any]]] = []
        self.counter = 0
        self.students = {s.id: s for s in population.students}
        self.tutors = {t.id: t for t in population.tutors}
        self.cell_students: dict[tuple[str, str], int] = {}
        for st in population.students:
            for subj in st.subjects:
                self.cell_students[(subj, st.region)] = self.cell_students.get((subj, st.region), 0) + 1
        self.by_subject: dict[str, list[Tutor]] = {
            s: [t for t in population.tutors if s in t.subjects] for s in SUBJECTS
        }
        # The churn cohort: engaged students (they have a history to lose), chosen by the seed alone.
        engaged = [s.id for s in population.students if s.profile == "engaged"]
        k = max(1, len(population.students) // 10)
        self.cohort = set(random.Random(population.seed).sample(engaged, k=min(k, len(engaged))))
        self.cell_balance = self._cell_balance()
        self._weights: dict[str, tuple[tuple[str, float], list[float]]] = {}

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.pop.seed}_{self.stream}_{self.counter}"

    def _cell_balance(self) -> dict[tuple[str, str], float]:
        """Each cell's steady demand/supply balance from the population: students per tutor offer in
        the cell against the marketplace, kept within 0.7–1.35 (a steady marketplace is balanced: a few
        cells run warm, none crosses the 1.5× of high demand, even with the readings' ±5 % noise)."""
        students = {c: 0 for c in self.pop.cells()}
        tutors = {c: 0 for c in self.pop.cells()}
        for s in self.pop.students:
            for subj in s.subjects:
                students[(subj, s.region)] += 1
        for t in self.pop.tutors:
            for subj in t.subjects:
                tutors[(subj, t.region)] += 1
        norm = (sum(students.values()) + 1) / (sum(tutors.values()) + 1)
        return {
            c: round(_clamp(((students[c] + 1) / (tutors[c] + 1)) / norm, 0.7, 1.35), 3) for c in students
        }

    # --- state as a function of the scenario and progress --------------------------------------

    def churn(self, student_id: str, progress: float) -> float:
        """0 → 1: how far a cohort student has gone down the churn wave."""
        if self.scenario != "churn_wave" or student_id not in self.cohort:
            return 0.0
        return _clamp((progress - CHURN_START) / CHURN_RAMP)

    def _student_state(self, student: Student, progress: float) -> StudentProfile:
        p = STUDENT_PROFILES[student.profile]
        f = self.churn(student.id, progress)
        if not f:
            return p
        return StudentProfile(
            sessions=p.sessions * (1 - 0.95 * f),
            ib=p.ib + 4.0 * f,
            success=p.success - 0.3 * f,
            rating=p.rating - 1.8 * f,
            health=p.health + (35 - p.health) * f,
        )

    def _student_weights(self, kind: str, progress: float) -> list[float]:
        """Cumulative weights over the students for drawing who books ("sessions"), calls ("ib") or is
        re-scored ("rescore"): the same draws as `random.choices(weights=…)`, computed once per
        progress value that can change them (only the churn wave's ramp does), not once per event."""
        key = (kind, progress if self.scenario == "churn_wave" and progress > CHURN_START else 0.0)
        cached = self._weights.get(kind)
        if cached is None or cached[0] != key:
            if kind == "rescore":
                values = [1 + 6 * self.churn(s.id, progress) for s in self.pop.students]
            else:
                values = [getattr(self._student_state(s, progress), kind) for s in self.pop.students]
            cached = (key, list(accumulate(values)))
            self._weights[kind] = cached
        return cached[1]

    def spike(self, progress: float) -> bool:
        return self.scenario == "ib_spike" and SPIKE_START <= progress < SPIKE_END

    def shortage(self, progress: float) -> float:
        if self.scenario != "tutor_shortage":
            return 0.0
        return _clamp((progress - SHORTAGE_START) / SHORTAGE_RAMP)

    def _offers(self, tutor: Tutor, progress: float) -> list[str]:
        subjects = list(tutor.subjects)
        if self.shortage(progress) > 0 and tutor.region == SHORTAGE_CELL[1] and SHORTAGE_CELL[0] in subjects:
            # the cell's tutors leave it one by one as the shortage deepens
            local = [t.id for t in self.by_subject[SHORTAGE_CELL[0]] if t.region == SHORTAGE_CELL[1]]
            if local.index(tutor.id) < math.ceil(len(local) * self.shortage(progress)):
                subjects.remove(SHORTAGE_CELL[0])
        return subjects

    def _health(self, student: Student, progress: float) -> float:
        state = self._student_state(student, progress)
        score = state.health + student.health_offset + self.rng.uniform(-4, 4)
        floor = 0.0 if self.churn(student.id, progress) else HEALTH_FLOOR
        return round(_clamp(score, floor, 100.0), 1)

    # --- events ---------------------------------------------------------------------------------

    def type_weights(self, progress: float) -> dict[str, float]:
        """Relative event rates by type at this point of the run (a spike multiplies IB calls, a
        shortage the cell's readings; every other type keeps its rate)."""
        weights: dict[str, float] = dict(self.TYPE_WEIGHTS)
        if self.spike(progress):
            weights["ib_call_logged"] *= 10
        if self.shortage(progress) > 0:
            weights["supply_demand_update"] *= 2
        return weights

    def intensity(self, progress: float) -> float:
        """The total event rate at this point of the run relative to the steady rate: a caller that
        paces events multiplies its rate by it, so a spike adds calls instead of displacing sessions."""
        return sum(self.type_weights(progress).values()) / sum(self.TYPE_WEIGHTS.values())

    def next_event(self, now: datetime, progress: float = 0.0) -> dict[str, Any]:
        rng = self.rng
        weights = self.type_weights(progress)
        kind = rng.choices(list(weights), weights=list(weights.values()))[0]
        ts = now.isoformat()
        if kind == "session":
            # The oldest session completes once its scheduled time is up (in history mode simulated
            # minutes pass quickly, so sessions last about as scheduled); a bounded number are in
            # progress at once, so a slow real-time run still shows completions.
            if self.open_sessions and (
                self.open_sessions[0][0] <= now or len(self.open_sessions) > MAX_OPEN_SESSIONS
            ):
                return self._complete(ts, progress)
            return self._start(now, progress)
        if kind == "ib_call_logged":
            return self._ib_call(ts, progress)
        if kind == "customer_health_update":
            return self._health_update(ts, progress)
        if kind == "tutor_availability_updated":
            return self._availability(ts, progress)
        return self._supply_demand(ts, progress)

    def _event(self, event_type: str, ts: str, payload: dict[str, Any]) -> dict[str, Any]:
        return {"event_type": event_type, "event_id": self._id("evt"), "timestamp": ts, "payload": payload}

    def _start(self, now: datetime, progress: float) -> dict[str, Any]:
        rng = self.rng
        student = rng.choices(self.pop.students, cum_weights=self._student_weights("sessions", progress))[0]
        subject = rng.choice(student.subjects)
        candidates = [t for t in self.by_subject.get(subject, []) if subject in self._offers(t, progress)]
        local = [t for t in candidates if t.region == student.region]
        pool = local or candidates or self.pop.tutors
        tutor = rng.choices(pool, weights=[TUTOR_PROFILES[t.profile].popularity for t in pool])[0]
        s = {
            "session_id": self._id("sess"),
            "student_id": student.id,
            "tutor_id": tutor.id,
            "subject": subject,
        }
        scheduled = rng.choice([30, 45, 60, 90])
        self.open_sessions.append((now + timedelta(minutes=scheduled), scheduled, s))
        return self._event(
            "session_started",
            now.isoformat(),
            {
                **s,
                "session_type": rng.choice(["one_on_one", "one_on_one", "group", "instant_book"]),
                "scheduled_duration_minutes": scheduled,
            },
        )

    def _complete(self, ts: str, progress: float) -> dict[str, Any]:
        rng = self.rng
        _, scheduled, s = self.open_sessions.pop(0)
        state = self._student_state(self.students[s["student_id"]], progress)
        tutor = self.tutors[s["tutor_id"]]
        tp = TUTOR_PROFILES[tutor.profile]
        ok = rng.random() < state.success * tp.success
        mean = (state.rating + tp.rating) / 2 - (0 if ok else 1.5)
        return self._event(
            "session_completed",
            ts,
            {
                **s,
                "actual_duration_minutes": scheduled if ok else rng.randint(0, 20),
                "student_rating": max(1, min(5, round(rng.gauss(mean, 0.6)))),
                "tutor_rating": max(1, min(5, round(rng.gauss(4.3, 0.6)))),
                "completed_successfully": ok,
            },
        )

    def _ib_call(self, ts: str, progress: float) -> dict[str, Any]:
        rng = self.rng
        student = rng.choices(self.pop.students, cum_weights=self._student_weights("ib", progress))[0]
        reason = SPIKE_REASON if self.spike(progress) and rng.random() < 0.85 else rng.choice(IB_REASONS)
        return self._event(
            "ib_call_logged",
            ts,
            {
                "call_id": self._id("call"),
                "student_id": student.id,
                "reason": reason,
                "duration_seconds": rng.randint(60, 1800),
                "resolved": rng.random() < 0.7,
                "priority": rng.choices(["low", "medium", "high"], weights=[50, 35, 15])[0],
            },
        )

    def _health_update(self, ts: str, progress: float) -> dict[str, Any]:
        rng = self.rng
        # The platform re-scores students whose behaviour changes more often.
        student = rng.choices(self.pop.students, cum_weights=self._student_weights("rescore", progress))[0]
        state = self._student_state(student, progress)
        score = self._health(student, progress)
        per_week = 3 * state.sessions
        return self._event(
            "customer_health_update",
            ts,
            {
                "student_id": student.id,
                "health_score": score,
                "churn_risk": "high" if score < 50 else "medium" if score < 70 else "low",
                "sessions_last_7_days": max(0, round(rng.gauss(per_week, 0.7))),
                "sessions_last_30_days": max(0, round(rng.gauss(per_week * 4.3, 1.5))),
                "ib_calls_last_14_days": max(0, round(rng.gauss(state.ib, 0.7))),
                "avg_session_rating": round(_clamp(state.rating, 1, 5), 2),
            },
        )

    def _availability(self, ts: str, progress: float) -> dict[str, Any]:
        tutor = self.rng.choice(self.pop.tutors)
        subjects = self._offers(tutor, progress)
        hours = tutor.hours * len(subjects) / len(tutor.subjects)
        return self._event(
            "tutor_availability_updated",
            ts,
            {
                "tutor_id": tutor.id,
                "available_hours_this_week": round(hours, 1),
                "subjects": subjects,
                "timezone": TIMEZONES[tutor.region],
                "accepts_instant_book": tutor.profile == "reliable",
            },
        )

    def _supply_demand(self, ts: str, progress: float) -> dict[str, Any]:
        rng = self.rng
        cells = self.pop.cells()
        shortage = self.shortage(progress)
        weights = [1 + (20 * shortage if c == SHORTAGE_CELL else 0) for c in cells]
        subject, region = rng.choices(cells, weights=weights)[0]
        tutors = sum(
            1
            for t in self.by_subject.get(subject, [])
            if t.region == region and subject in self._offers(t, progress)
        )
        offered = sum(1 for t in self.by_subject.get(subject, []) if t.region == region)
        students = self.cell_students.get((subject, region), 0)
        demand_factor, supply_factor = 1.0, 1.0
        if (subject, region) == SHORTAGE_CELL and shortage:
            demand_factor = 1 + shortage
            supply_factor = tutors / offered if offered else 0.0
            students = max(1, round(students * demand_factor))
        # Scores consistent with the cell's balance: demand/supply ≈ balance × demand / supply factors.
        balance = self.cell_balance[(subject, region)] * rng.uniform(0.95, 1.05)
        demand = _clamp(50 * math.sqrt(balance) * demand_factor, 0, 100)
        supply = _clamp(50 / math.sqrt(balance) * supply_factor, 0, 100)
        ratio = (demand + 1) / (supply + 1)
        status = "high_demand" if ratio >= 1.5 else "oversupplied" if ratio <= 1 / 1.5 else "balanced"
        return self._event(
            "supply_demand_update",
            ts,
            {
                "subject": subject,
                "region": region,
                "available_tutors": tutors,
                "active_students": students,
                "demand_score": round(demand, 1),
                "supply_score": round(supply, 1),
                "balance_status": status,
            },
        )


def history(factory: EventFactory, *, start: datetime, end: datetime, count: int) -> list[dict[str, Any]]:
    """`count` events evenly spread over [start, end), progress by position: a deterministic
    stretch of simulated time (the same factory state and arguments give the same events)."""
    span = end - start
    return [factory.next_event(start + span * (i / count), progress=i / count) for i in range(count)]
