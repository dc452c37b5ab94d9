"""Celery app. `celery -A iops worker` also runs the stream consumer loop (a worker bootstep)."""

import os

from celery import Celery, bootsteps
from celery.signals import setup_logging

from iops.lib.env import env_float, env_int

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iops.settings")

app = Celery("iops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.beat_schedule = {
    # Windows decay with time: stale snapshots refreshed and their alert rules run (SNAPSHOT_REFRESH_SECONDS).
    "refresh-stale-snapshots": {
        "task": "alerts.refresh_stale",
        "schedule": float(env_int("SNAPSHOT_REFRESH_SECONDS", 300, minimum=30)),
    },
    # A no-op unless SIMULATOR_ENABLED is true (off by default, like the prototype's disabled schedule).
    "simulate-tick": {"task": "simulator.simulate_tick", "schedule": 60.0},
    # Alert deliveries due now: first attempts the fast path missed, and retries (issue 5).
    "send-due-alert-deliveries": {
        "task": "alerts.send_due_deliveries",
        "schedule": env_float("ALERT_DELIVERY_SWEEP_SECONDS", 5.0),
    },
    # Alert re-checks, rate anomalies (once a minute) and auto-resolve (issue 5); ALERT_SWEEP_SECONDS.
    "alerts-sweep": {
        "task": "alerts.sweep",
        "schedule": float(env_int("ALERT_SWEEP_SECONDS", 30, minimum=5)),
    },
    # Retention (issue 9): expired raw events, buckets and insights, in bounded batches.
    "retention": {"task": "ingest.retention", "schedule": 3600.0},
    # Churn/burnout insights for the N riskiest entities by the local model (issue 6).
    "insights-score-riskiest": {
        "task": "insights.score_riskiest",
        "schedule": float(env_int("INSIGHTS_BEAT_SECONDS", 900, minimum=60)),
    },
}


@setup_logging.connect
def _use_django_logging(**kwargs) -> None:
    """Workers and beat log like the web role (LOG_FORMAT json/text, request ids), not Celery's format.

    Connecting this signal stops Celery from replacing the root logger's handlers; the level is
    LOG_LEVEL (Celery's `--loglevel` no longer applies).
    """
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


class StreamConsumerStep(bootsteps.StartStopStep):
    """Each worker process joins the stream's consumer group; more workers, more throughput."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.thread = None
        self.stop_event = None

    def start(self, parent):
        import threading

        from django.conf import settings

        if not getattr(settings, "IOPS_CONSUME_IN_CELERY", True):
            return
        from ingest.streams import stream_require_durable
        from ingest.worker import StreamWorker

        stream_require_durable()  # REDIS_REQUIRE_AOF: no worker on a Redis that loses what it holds
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=StreamWorker().run, args=(self.stop_event,), name="iops-stream-consumer", daemon=True
        )
        self.thread.start()

    def stop(self, parent):
        if self.stop_event is not None:
            self.stop_event.set()
            self.thread.join(timeout=30)


app.steps["worker"].add(StreamConsumerStep)
