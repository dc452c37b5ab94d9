from __future__ import annotations

from django.conf import settings
from django.db import models


class Profile(models.Model):
    """A dashboard user's preferences: for now the time zone every time on their pages is shown in."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="iops_profile"
    )
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        default="",
        help_text="IANA name, e.g. Europe/Paris; empty = DISPLAY_TIME_ZONE",
    )

    def __str__(self) -> str:
        return f"{self.user} ({self.time_zone or 'default time zone'})"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from dashboard.timezones import known_zone

        if self.time_zone and not known_zone(self.time_zone):
            raise ValidationError({"time_zone": f"unknown time zone {self.time_zone!r} (an IANA name)"})
