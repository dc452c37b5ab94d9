"""`manage.py rebuild_metrics`: recompute every bucket, Session row, snapshot and the per-minute
series from the stored events. Lives in ingest because it reads ingest's Event table; the work is
metrics.services.metrics_rebuild (metrics imports nothing from ingest)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone
from tqdm import tqdm

from ingest.models import Event
from metrics.services import metrics_rebuild


def stored_event_batches(*, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """Stored events as normalised dicts, ordered by event time then id, in keyset-paged batches."""
    fields = ("id", "event_id", "event_type", "occurred_at", "received_at", "payload")
    after: Q | None = None
    while True:
        qs = Event.objects.order_by("occurred_at", "id")
        if after is not None:
            qs = qs.filter(after)
        rows = list(qs.values_list(*fields)[:batch_size])
        if not rows:
            return
        yield [
            {
                "event_id": event_id,
                "event_type": event_type,
                "timestamp": occurred_at.isoformat(),
                "received_at": received_at.isoformat(),
                "payload": payload,
            }
            for _, event_id, event_type, occurred_at, received_at, payload in rows
        ]
        last_id, last_at = rows[-1][0], rows[-1][3]
        after = Q(occurred_at__gt=last_at) | Q(occurred_at=last_at, id__gt=last_id)


class Command(BaseCommand):
    help = "Recompute every metrics bucket and snapshot from the stored events (one transaction)."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000, help="events per fold (default 1000)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, batch_size: int, no_progress: bool, **options):
        if not 1 <= batch_size <= 50_000:
            raise CommandError("--batch-size must be between 1 and 50000")
        now = timezone.now()
        total = Event.objects.count()
        bar = tqdm(
            total=total,
            unit="ev",
            unit_scale=True,
            desc="rebuild_metrics",
            disable=no_progress,
            file=self.stderr._out,
        )
        with bar:
            result = metrics_rebuild(
                batches=stored_event_batches(batch_size=batch_size), now=now, on_batch=bar.update
            )
        rate = result.events / bar.format_dict["elapsed"] if bar.format_dict["elapsed"] else 0.0
        self.stdout.write(
            self.style.SUCCESS(
                f"rebuilt from {result.events} events: {result.students} students, {result.tutors} tutors, "
                f"{result.subject_regions} subject×region rows as of {now:%Y-%m-%d %H:%M:%S} UTC "
                f"({rate:,.0f} events/s)"
            )
        )
