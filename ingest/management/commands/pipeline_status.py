"""`manage.py pipeline_status`: backlog, lag, throughput, dead letters and worker heartbeats."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand
from django.utils import timezone

from ingest import operations


def status(*, now) -> dict:
    backlog = operations.backlog(now=now)
    deliveries = operations.delivery_counts()
    return {
        "as_of": now.isoformat(),
        "stream": backlog,
        "events_per_second_1m": round(operations.events_per_second(now=now, seconds=60), 2),
        "dead_letters": {
            "stream": operations.stream_dead_letters(),
            "deliveries": None if deliveries is None else deliveries.get("dead", 0),
        },
        "workers": [
            {
                "name": w.name,
                "backend": w.backend,
                "last_seen": w.last_seen.isoformat(),
                "age_seconds": round(w.age_seconds, 1),
                "processed": w.processed,
                "batches": w.batches,
                "mean_batch_ms": round(1000 * w.batch_seconds_sum / w.batches, 1) if w.batches else None,
            }
            for w in operations.workers(now=now)
        ],
    }


class Command(BaseCommand):
    help = "Show the stream backlog and lag, events/s over the last minute, dead letters and workers."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    def handle(self, *args, **opts):
        data = status(now=timezone.now())
        if opts["json"]:
            self.stdout.write(json.dumps(data, indent=2))
            return
        s = data["stream"]
        if s["available"]:
            lag = (
                f", {s['millis_behind_latest']} ms behind latest"
                if s.get("millis_behind_latest") is not None
                else ""
            )
            if s.get("oldest_seconds") is not None:
                lag += f", oldest {s['oldest_seconds']:.1f} s old"
            stream = f"{s.get('waiting', '?')} waiting, {s.get('in_flight', 0)} in flight{lag}"
        else:
            stream = f"UNAVAILABLE ({s['error']})"
        dead = data["dead_letters"]
        deliveries = "n/a" if dead["deliveries"] is None else dead["deliveries"]
        self.stdout.write(f"stream ({s['backend']}): {stream}")
        self.stdout.write(f"throughput: {data['events_per_second_1m']} events/s over the last minute")
        self.stdout.write(f"dead letters: stream {dead['stream']}, deliveries {deliveries}")
        if not data["workers"]:
            self.stdout.write("workers: no heartbeat recorded")
            return
        header = ("worker", "backend", "last seen", "age s", "processed", "batches", "mean batch ms")
        rows = [
            (
                w["name"],
                w["backend"],
                w["last_seen"][:19].replace("T", " "),
                f"{w['age_seconds']:.0f}",
                str(w["processed"]),
                str(w["batches"]),
                "-" if w["mean_batch_ms"] is None else f"{w['mean_batch_ms']:.1f}",
            )
            for w in data["workers"]
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            self.stdout.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
