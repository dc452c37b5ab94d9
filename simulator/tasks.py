from celery import shared_task
from django.conf import settings
from django.utils import timezone

from simulator import runner


@shared_task(name="simulator.simulate_tick")
def simulate_tick() -> int:
    """Beat: a small simulation every minute, only when SIMULATOR_ENABLED is set.

    The population is the same every minute (SIMULATOR_SEED), so entities build up history; the
    minute number is the stream number, so each tick's event ids are new (not dropped as repeats)."""
    if not settings.SIMULATOR_ENABLED:
        return 0
    # A population whose ordinary activity is the tick's events a minute (not 300 students doing it all).
    students, tutors = runner.population_for_rate(settings.SIMULATOR_TICK_EVENTS / 60)
    summary = runner.run(
        sender=runner.DirectSender(),
        seed=settings.SIMULATOR_SEED,
        students=students,
        tutors=tutors,
        streams=1,
        events_per_stream=settings.SIMULATOR_TICK_EVENTS,
        batch_size=50,
        stream_offset=int(timezone.now().timestamp() // 60),
    )
    return summary.accepted
