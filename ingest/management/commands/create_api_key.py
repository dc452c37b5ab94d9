from django.core.management.base import BaseCommand

from ingest.keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--rate-limit", type=float, default=None, help="events/s for this key")

    def handle(self, *args, **opts):
        issued = api_key_create(name=opts["name"], rate_limit_per_sec=opts["rate_limit"])
        self.stdout.write(issued.plaintext)
