"""manage.py embed_link PANEL [--range 24h] [--ttl SECONDS]: print a signed, expiring link to an
embeddable panel (dashboard/embed.py), for an iframe on the platform's own admin."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from dashboard.embed import PANELS, embed_url
from dashboard.selectors import DEFAULT_RANGE, RANGES


class Command(BaseCommand):
    help = "Print a signed, expiring link to an embeddable panel (KPI strip or one chart)."

    def add_arguments(self, parser):
        parser.add_argument("panel", choices=sorted(PANELS))
        parser.add_argument("--range", dest="range_key", default=DEFAULT_RANGE, choices=list(RANGES))
        parser.add_argument("--ttl", type=int, default=86400, help="seconds the link stays valid")

    def handle(self, *args, panel: str, range_key: str, ttl: int, **options):
        try:
            link = embed_url(panel=panel, range_key=range_key, ttl_seconds=ttl, now=timezone.now())
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(link["url"])
        self.stderr.write(f"valid until {link['expires_at']}")
