"""One process for the embedded mode: daphne + the stream worker thread + (optionally) the simulator."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

logger = logging.getLogger("iops.serve")


def _maintenance(stop: threading.Event) -> None:
    from django.db import close_old_connections

    from alerts.services import alerts_refresh_stale

    while not stop.wait(settings.SNAPSHOT_REFRESH_SECONDS):
        try:
            alerts_refresh_stale(now=timezone.now())
        except Exception:  # noqa: BLE001 - keep the loop alive
            logger.exception("snapshot refresh failed")
        finally:
            close_old_connections()


def _alert_sweeps(stop: threading.Event) -> None:
    """Issue 5: alert re-checks, rate anomalies and auto-resolve, on a faster cadence than snapshots."""
    from django.db import close_old_connections

    from alerts.services import alerts_sweep

    while not stop.wait(settings.ALERT_SWEEP_SECONDS):
        try:
            alerts_sweep(now=timezone.now())
        except Exception:  # noqa: BLE001 - keep the loop alive
            logger.exception("alert sweep failed")
        finally:
            close_old_connections()


def _deliver_alerts(stop: threading.Event) -> None:
    """Issue 5: send due alert deliveries off the stream worker thread, so a slow channel never stalls it."""
    from django.db import close_old_connections

    from alerts.delivery import deliveries_send_due

    while not stop.wait(settings.ALERT_DELIVERY_SWEEP_SECONDS):
        try:
            deliveries_send_due(now=timezone.now())
        except Exception:  # noqa: BLE001 - keep the loop alive
            logger.exception("alert delivery sweep failed")
        finally:
            close_old_connections()


def _simulate(stop: threading.Event, rate: float) -> None:
    from simulator import runner

    runner.run(
        sender=runner.DirectSender(),
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
        from iops.realtime import register_server_loop

        stop = threading.Event()
        threads = []
        if not opts["no_worker"] and settings.IOPS_EMBEDDED_WORKER:
            from ingest.worker import StreamWorker

            threads.append(threading.Thread(target=StreamWorker().run, args=(stop,), name="iops-worker"))
        threads.append(
            threading.Thread(target=_maintenance, args=(stop,), name="iops-maintenance", daemon=True)
        )
        threads.append(
            threading.Thread(target=_alert_sweeps, args=(stop,), name="iops-alert-sweeps", daemon=True)
        )
        threads.append(
            threading.Thread(target=_deliver_alerts, args=(stop,), name="iops-alert-delivery", daemon=True)
        )
        if opts["simulate"] > 0:
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
