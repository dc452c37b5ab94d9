"""Celery app. `celery -A iops worker` also runs the stream consumer loop (a worker bootstep)."""

import os

from celery import Celery, bootsteps
from celery.signals import setup_logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iops.settings")

app = Celery("iops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # the beat schedule is CELERY_BEAT_SCHEDULE in iops/settings.py


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
        if self.stop_event is not None and self.thread is not None:
            self.stop_event.set()
            self.thread.join(timeout=30)


app.steps["worker"].add(StreamConsumerStep)
