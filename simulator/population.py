"""A persistent, reproducible marketplace population whose events are correlated over time.

Every id is drawn once per seed, so students accumulate history and rules can fire realistically
(the prototype drew a fresh random id per event).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from faker import Faker

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
IB_REASONS = [
    "scheduling_issue",
    "technical_problem",
    "tutor_concern",
    "billing_question",
    "general_inquiry",
    "other",
]

# profile -> (session weight, IB-call probability per activity, success probability, rating mean, health centre)
STUDENT_PROFILES = {
    "engaged": (1.0, 0.04, 0.97, 4.6, 88),
    "drifting": (0.5, 0.15, 0.85, 3.8, 66),
    "churning": (0.2, 0.35, 0.65, 2.9, 42),
}
TUTOR_PROFILES = {"reliable": (20, 0.98), "overloaded": (6, 0.85)}  # available hours, success factor


@dataclass
class Student:
    id: str
    name: str
    region: str
    subjects: list[str]
    profile: str
    sessions_done: int = 0


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
        fake = Faker()
        fake.seed_instance(seed)
        pop = cls(seed=seed)
        for i in range(students):
            profile = rng.choices(list(STUDENT_PROFILES), weights=[70, 20, 10])[0]
            pop.students.append(
                Student(
                    f"stu_{i + 1:05d}",
                    fake.name(),
                    rng.choice(REGIONS),
                    rng.sample(SUBJECTS, k=rng.randint(1, 3)),
                    profile,
                )
            )
        for i in range(tutors):
            profile = rng.choices(list(TUTOR_PROFILES), weights=[85, 15])[0]
            hours = TUTOR_PROFILES[profile][0] * rng.uniform(0.7, 1.4)
            pop.tutors.append(
                Tutor(
                    f"tut_{i + 1:04d}",
                    fake.name(),
                    rng.choice(REGIONS),
                    rng.sample(SUBJECTS, k=rng.randint(1, 4)),
                    profile,
                    round(hours, 1),
                )
            )
        return pop


class EventFactory:
    """Draws the next events for a population. Deterministic for a given seed and clock."""

    TYPE_WEIGHTS = {
        "session": 62,
        "ib_call_logged": 12,
        "customer_health_update": 12,
        "tutor_availability_updated": 7,
        "supply_demand_update": 7,
    }

    def __init__(self, population: Population, *, seed: int, scenario: str = "steady", stream: int = 0):
        self.pop = population
        self.rng = random.Random(seed * 1_000_003 + stream)
        self.scenario = scenario
        self.stream = stream
        self.open_sessions: list[dict[str, Any]] = []
        self.counter = 0
        self.by_subject: dict[str, list[Tutor]] = {
            s: [t for t in population.tutors if s in t.subjects] for s in SUBJECTS
        }
        self.cohort = {s.id for s in population.students[: max(1, len(population.students) // 10)]}

    def _id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.pop.seed}_{self.stream}_{self.counter}"

    def _profile(self, student: Student, progress: float) -> tuple[float, float, float, float, float]:
        weight, ib, ok, rating, health = STUDENT_PROFILES[student.profile]
        if self.scenario == "churn_wave" and student.id in self.cohort:
            # the cohort drifts to churn as the run goes on
            f = min(1.0, progress * 1.5)
            weight, ib, ok, rating, health = (
                weight * (1 - 0.9 * f),
                ib + 0.5 * f,
                ok - 0.3 * f,
                rating - 1.5 * f,
                health - 45 * f,
            )
        return weight, ib, ok, rating, health

    def next_event(self, now: datetime, progress: float = 0.0) -> dict[str, Any]:
        rng = self.rng
        weights = dict(self.TYPE_WEIGHTS)
        if self.scenario == "ib_spike" and 0.3 < progress < 0.7:
            weights["ib_call_logged"] *= 8
        kind = rng.choices(list(weights), weights=list(weights.values()))[0]
        ts = now.isoformat()
        if kind == "session":
            if self.open_sessions and (rng.random() < 0.5 or len(self.open_sessions) > 20):
                s = self.open_sessions.pop(rng.randrange(len(self.open_sessions)))
                student = next(st for st in self.pop.students if st.id == s["student_id"])
                _, _, ok_p, rating_mean, _ = self._profile(student, progress)
                ok = rng.random() < ok_p
                rating = max(1, min(5, round(rng.gauss(rating_mean if ok else rating_mean - 1.5, 0.7))))
                student.sessions_done += 1
                return {
                    "event_type": "session_completed",
                    "event_id": self._id("evt"),
                    "timestamp": ts,
                    "payload": {
                        **s,
                        "actual_duration_minutes": rng.choice([30, 45, 60, 60, 90])
                        if ok
                        else rng.randint(0, 20),
                        "student_rating": rating,
                        "tutor_rating": max(1, min(5, round(rng.gauss(4.3, 0.6)))),
                        "completed_successfully": ok,
                    },
                }
            students = self.pop.students
            student = rng.choices(students, weights=[self._profile(s, progress)[0] for s in students])[0]
            subject = rng.choice(student.subjects)
            tutor = rng.choice(self.by_subject.get(subject) or self.pop.tutors)
            s = {
                "session_id": self._id("sess"),
                "student_id": student.id,
                "tutor_id": tutor.id,
                "subject": subject,
            }
            self.open_sessions.append(s)
            return {
                "event_type": "session_started",
                "event_id": self._id("evt"),
                "timestamp": ts,
                "payload": {
                    **s,
                    "session_type": rng.choice(["one_on_one", "one_on_one", "group", "instant_book"]),
                    "scheduled_duration_minutes": rng.choice([30, 45, 60, 90]),
                },
            }
        if kind == "ib_call_logged":
            students = self.pop.students
            student = rng.choices(students, weights=[self._profile(s, progress)[1] for s in students])[0]
            reason = (
                "technical_problem"
                if self.scenario == "ib_spike" and rng.random() < 0.8
                else rng.choice(IB_REASONS)
            )
            return {
                "event_type": "ib_call_logged",
                "event_id": self._id("evt"),
                "timestamp": ts,
                "payload": {
                    "call_id": self._id("call"),
                    "student_id": student.id,
                    "reason": reason,
                    "duration_seconds": rng.randint(60, 1800),
                    "resolved": rng.random() < 0.7,
                    "priority": rng.choices(["low", "medium", "high"], weights=[50, 35, 15])[0],
                },
            }
        if kind == "customer_health_update":
            student = rng.choice(self.pop.students)
            _, ib, _, rating, health = self._profile(student, progress)
            score = max(0.0, min(100.0, rng.gauss(health, 6)))
            return {
                "event_type": "customer_health_update",
                "event_id": self._id("evt"),
                "timestamp": ts,
                "payload": {
                    "student_id": student.id,
                    "health_score": round(score, 1),
                    "churn_risk": "high" if score < 50 else "medium" if score < 70 else "low",
                    "sessions_last_7_days": rng.randint(0, 4),
                    "sessions_last_30_days": rng.randint(0, 14),
                    "ib_calls_last_14_days": rng.randint(0, 3),
                    "avg_session_rating": round(max(1, min(5, rating)), 2),
                },
            }
        if kind == "tutor_availability_updated":
            tutor = rng.choice(self.pop.tutors)
            return {
                "event_type": "tutor_availability_updated",
                "event_id": self._id("evt"),
                "timestamp": ts,
                "payload": {
                    "tutor_id": tutor.id,
                    "available_hours_this_week": tutor.hours,
                    "subjects": tutor.subjects,
                    "timezone": TIMEZONES[tutor.region],
                    "accepts_instant_book": tutor.profile == "reliable",
                },
            }
        subject, region = rng.choice(SUBJECTS), rng.choice(REGIONS)
        tutors = sum(1 for t in self.by_subject.get(subject, []) if t.region == region)
        students = sum(1 for s in self.pop.students if subject in s.subjects and s.region == region)
        shortage = self.scenario == "tutor_shortage" and subject == "Mathematics" and region == "west"
        if shortage:
            tutors = max(0, int(tutors * (1 - progress)))
            students = int(students * (1 + progress))
        demand = min(100.0, 20 + students * 4 + rng.uniform(-5, 5))
        supply = min(100.0, 10 + tutors * 12 + rng.uniform(-5, 5))
        ratio = (demand + 1) / (supply + 1)
        status = "high_demand" if ratio >= 1.5 else "oversupplied" if ratio <= 1 / 1.5 else "balanced"
        return {
            "event_type": "supply_demand_update",
            "event_id": self._id("evt"),
            "timestamp": ts,
            "payload": {
                "subject": subject,
                "region": region,
                "available_tutors": tutors,
                "active_students": students,
                "demand_score": round(demand, 1),
                "supply_score": round(supply, 1),
                "balance_status": status,
            },
        }


def clock(start: datetime, speed: float):
    """Simulated time: `speed` simulated seconds per real second, starting at `start`."""
    import time

    t0 = time.monotonic()

    def now() -> datetime:
        return start + timedelta(seconds=(time.monotonic() - t0) * speed)

    return now
