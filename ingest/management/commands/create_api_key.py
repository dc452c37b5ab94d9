from django.core.management.base import BaseCommand, CommandError

from ingest.keys import api_key_create
from ingest.models import API_KEY_SCOPES


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored). It may ingest, nothing else, unless --scopes says more."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--rate-limit", type=float, default=None, help="events/s for this key")
        parser.add_argument(
            "--scopes",
            default="ingest",
            help=f"comma-separated, of {', '.join(API_KEY_SCOPES)} (default: ingest)",
        )

    def handle(self, *args, **opts):
        scopes = [s.strip() for s in opts["scopes"].split(",") if s.strip()]
        try:
            issued = api_key_create(name=opts["name"], rate_limit_per_sec=opts["rate_limit"], scopes=scopes)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(issued.plaintext)
