import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from ingest.keys import api_key_create
from ingest.models import ApiKey


class Command(BaseCommand):
    help = "First start: create an admin user and an ingest API key if none exist, and print them once."

    def handle(self, *args, **opts):
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(12)
            User.objects.create_superuser("admin", "admin@localhost", password)
            self.stdout.write(self.style.SUCCESS(f"Admin login (shown once): admin / {password}"))
        else:
            self.stdout.write("Admin user exists (reset with: python manage.py changepassword admin)")
        if not ApiKey.objects.filter(revoked_at__isnull=True).exists():
            issued = api_key_create(name="default")
            self.stdout.write(self.style.SUCCESS(f"Ingest API key (shown once): {issued.plaintext}"))
        else:
            self.stdout.write("An API key exists (new one: python manage.py create_api_key NAME)")
