"""One process for the embedded mode: daphne, the stream worker thread, a thread per beat entry (the
periodic tasks Celery beat runs in production) and, optionally, the simulator."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

logger = logging.getLogger("iops.serve")


def _periodic(stop: threading.Event, task_name: str, seconds: float) -> None:
    """One Celery beat entry, run in this process: the embedded mode has no beat, so `serve` keeps the
    same schedule (iops/celery.py) with a thread per entry, each task applied in its thread."""
    from django.db import close_old_connections

    from iops.celery import app

    task = app.tasks[task_name]
    while not stop.wait(seconds):
        try:
            task.apply(throw=True)
        except Exception:  # noqa: BLE001 - keep the loop alive
            logger.exception("periodic task failed", extra={"task": task_name})
        finally:
            close_old_connections()


def beat_entries() -> list[tuple[str, float]]:
    """(task name, seconds) of every beat entry, its tasks registered."""
    from iops.celery import app

    app.loader.import_default_modules()
    return [(e["task"], float(e["schedule"])) for e in app.conf.beat_schedule.values()]


def _simulate(stop: threading.Event, rate: float) -> None:
    from simulator import runner

    students, tutors = runner.population_for_rate(rate)
    logger.info("simulator population", extra={"students": students, "tutors": tutors, "rate": rate})
    runner.run(
        sender=runner.DirectSender(),
        students=students,
        tutors=tutors,
        streams=2,
        events_per_stream=None,
        rate=rate,
        duration=10**9,
        batch_size=5,
        stop=stop,
        # The same population every start (SIMULATOR_SEED), so students and tutors build up history
        # across restarts; stream numbers from the clock so a restart's event ids are new.
        seed=settings.SIMULATOR_SEED,
        stream_offset=int(timezone.now().timestamp()) * 2,
    )


class Command(BaseCommand):
    help = "Run everything in one process: daphne on --host/--port, the stream worker, the simulator."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--simulate", type=float, default=2.0, help="simulator events/s (0: off)")
        parser.add_argument(
            "--no-worker", action="store_true", help="do not start the in-process stream worker"
        )

    def handle(self, *args, **opts):
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server, twisted_loop

        from iops.asgi import application
        from iops.lib.realtime import register_server_loop

        stop = threading.Event()
        threads = []
        if not opts["no_worker"] and settings.IOPS_EMBEDDED_WORKER:
            from ingest.worker import StreamWorker

            threads.append(threading.Thread(target=StreamWorker().run, args=(stop,), name="iops-worker"))
        for task_name, seconds in beat_entries():
            threads.append(
                threading.Thread(
                    target=_periodic, args=(stop, task_name, seconds), name=f"iops-{task_name}", daemon=True
                )
            )
        if opts["simulate"] > 0:
            from simulator.runner import population_for_rate

            students, tutors = population_for_rate(opts["simulate"])
            self.stdout.write(
                f"simulator: {opts['simulate']:g} events/s from {students:,} students and {tutors:,} tutors "
                "(about one event per student a day, as a real marketplace)"
            )
            threads.append(
                threading.Thread(
                    target=_simulate, args=(stop, opts["simulate"]), name="iops-sim", daemon=True
                )
            )
        register_server_loop(twisted_loop)
        for t in threads:
            t.start()
        url = f"http://{opts['host']}:{opts['port']}/"
        self.stdout.write(self.style.SUCCESS(f"IOps dashboard: {url}  (Ctrl-C to stop)"))
        try:
            Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=opts["host"], port=opts["port"]),
                signal_handlers=True,
                verbosity=0,
            ).run()
        finally:
            self.stdout.write("stopping: finishing the current batch…")
            stop.set()
            for t in threads:
                if not t.daemon:
                    t.join(timeout=30)
            self.stdout.write("stopped; unprocessed events stay queued for the next start")
