from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from simulator import runner
from simulator.population import SCENARIOS


class Command(BaseCommand):
    help = "Generate marketplace events from a reproducible population (HTTP to --target, or straight into the stream)."

    def add_arguments(self, parser):
        parser.add_argument("--streams", type=int, default=50, help="concurrent producers (default 50)")
        parser.add_argument(
            "--events-per-stream", type=int, default=10, help="events each stream sends (default 10)"
        )
        parser.add_argument(
            "--rate", type=float, default=None, help="total events per second (default: as fast as possible)"
        )
        parser.add_argument(
            "--duration", type=float, default=None, help="run for this many seconds instead of a fixed count"
        )
        parser.add_argument("--scenario", choices=SCENARIOS, default="steady")
        parser.add_argument(
            "--speed", type=float, default=1.0, help="simulated seconds per real second (history in the past)"
        )
        parser.add_argument(
            "--days",
            type=float,
            default=None,
            help="simulated span in days ending now (history; an alternative to --speed)",
        )
        parser.add_argument(
            "--students",
            type=int,
            default=None,
            help="population size (default: sized to --rate for a live run, about one event per student "
            "a day; else 300)",
        )
        parser.add_argument(
            "--tutors",
            type=int,
            default=None,
            help="tutors in the population (default: students / 10, at least 30)",
        )
        parser.add_argument("--target", default=None, help="ingest base URL, e.g. http://127.0.0.1:8000")
        parser.add_argument("--api-key", default=None, help="API key for --target")
        parser.add_argument("--single", action="store_true", help="with --target: one event per request")
        parser.add_argument("--batch-size", type=int, default=50)
        parser.add_argument("--seed", type=int, default=42)

    def handle(self, *args, **opts):
        sender: runner.HttpSender | runner.DirectSender
        if opts["target"]:
            if not opts["api_key"]:
                raise CommandError("--target needs --api-key")
            sender = runner.HttpSender(opts["target"].rstrip("/"), opts["api_key"], single=opts["single"])
        else:
            sender = runner.DirectSender()
        if opts["streams"] < 1 or not 1 <= opts["batch_size"] <= 500:
            raise CommandError("--streams must be >= 1 and --batch-size 1..500")
        live = opts["rate"] and not opts["days"] and opts["speed"] <= 1
        students, tutors = runner.population_for_rate(opts["rate"]) if live else (300, 30)
        opts["students"] = students if opts["students"] is None else opts["students"]
        opts["tutors"] = max(1, opts["students"] // 10) if opts["tutors"] is None else opts["tutors"]
        if opts["students"] < 1 or opts["tutors"] < 1:
            raise CommandError("--students and --tutors must be >= 1")
        if not opts["duration"] and opts["events_per_stream"] < 1:
            raise CommandError("--events-per-stream must be >= 1 (or give --duration)")
        if opts["rate"] is not None and opts["rate"] <= 0:
            raise CommandError("--rate must be > 0")
        total = None if opts["duration"] else opts["streams"] * opts["events_per_stream"]
        bar = tqdm(total=total, unit="ev", file=sys.stderr, dynamic_ncols=True, disable=None, mininterval=1.0)

        def progress(summary):
            bar.n = summary.sent
            bar.set_postfix(
                accepted=summary.accepted,
                rejected=summary.rejected,
                retried=summary.retried,
                rate=f"{summary.rate:.0f}/s",
                refresh=False,
            )
            bar.refresh()

        summary = runner.run(
            sender=sender,
            seed=opts["seed"],
            streams=opts["streams"],
            events_per_stream=opts["events_per_stream"],
            rate=opts["rate"],
            duration=opts["duration"],
            scenario=opts["scenario"],
            speed=opts["speed"],
            days=opts["days"],
            students=opts["students"],
            tutors=opts["tutors"],
            batch_size=opts["batch_size"],
            on_progress=progress,
        )
        progress(summary)
        bar.close()
        self.stdout.write(
            f"sent={summary.sent} accepted={summary.accepted} rejected={summary.rejected} retried={summary.retried} "
            f"failed={summary.failed} seconds={summary.seconds:.1f} rate={summary.rate:.1f}/s"
        )
        for err in summary.errors[:5]:
            self.stderr.write(err)
        if summary.failed:
            raise CommandError(f"{summary.failed} events could not be delivered")
