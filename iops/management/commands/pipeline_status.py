"""`manage.py pipeline_status`: backlog, lag, throughput, dead letters and worker heartbeats."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand
from django.utils import timezone

from iops.ops import pipeline_status


class Command(BaseCommand):
    help = "Show the stream backlog and lag, events/s over the last minute, dead letters and workers."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    def handle(self, *args, **opts):
        data = pipeline_status(now=timezone.now())
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
        self.stdout.write(f"stream ({s['backend']}): {stream}")
        self.stdout.write(f"throughput: {data['events_per_second_1m']} events/s over the last minute")
        self.stdout.write(f"dead letters: stream {dead['stream']}, deliveries {dead['deliveries']}")
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
