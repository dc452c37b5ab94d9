"""Time helpers shared by the fold and the snapshots: hour buckets and window cut-offs."""

from __future__ import annotations

from datetime import datetime, timedelta

WINDOW_DAYS = (7, 14, 30)


def floor_hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def floor_minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


def window_start(now: datetime, days: int) -> datetime:
    """First hour bucket inside an N-day window: buckets starting at or after now − N days (hour resolution)."""
    return floor_hour(now - timedelta(days=days))
