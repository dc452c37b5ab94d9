"""Region of a tutor from the timezone in their availability (students carry no region in events).

The platform's supply–demand readings name five US regions; our own data knows only a tutor's IANA
timezone. Regions that share a timezone cannot be told apart, so they share one pool of tutors
(northeast and southeast are both Eastern time). Mapping as the simulator and the prototype used it.
"""

from __future__ import annotations

REGION_TIMEZONES: dict[str, str] = {
    "northeast": "America/New_York",
    "southeast": "America/New_York",
    "midwest": "America/Chicago",
    "west": "America/Los_Angeles",
    "southwest": "America/Phoenix",
}


def regions_for_timezone(tz: str) -> list[str]:
    return sorted(r for r, zone in REGION_TIMEZONES.items() if zone == tz)


def region_label(tz: str) -> str:
    """Comma-joined candidate regions ("northeast,southeast" for Eastern time); "" when unknown."""
    return ",".join(regions_for_timezone(tz))
