"""Strict readers for environment variables: an ambiguous value stops start-up instead of guessing."""

from __future__ import annotations

import os
from typing import overload

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...
def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def env_bool(name: str, default: bool) -> bool:
    raw = env_str(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be one of true/false/1/0/yes/no/on/off, got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(name: str, default: float) -> float:
    raw = env_str(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env_str(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def absolute_base_url(name: str, value: str) -> str:
    """An absolute http(s) URL with a host and no query or fragment, without its trailing slash."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ImproperlyConfigured(
            f"{name} must be an absolute http(s) URL such as https://iops.example.com, got {value!r}"
        )
    return value.rstrip("/")


def frame_ancestors(name: str, value: str) -> str:
    """CSP frame-ancestors sources, space- or comma-separated: 'none', 'self', a scheme ("https:") or
    an origin with an optional wildcard host ("https://*.example.com:8443"). Anything else — a ';'
    that would start another directive, a path, a quote — stops start-up."""
    import re

    sources = [s for s in re.split(r"[\s,]+", value) if s]
    keyword = {"'none'", "'self'"}
    origin = re.compile(
        r"^(https?:(//(\*\.)?[A-Za-z0-9.-]+(:(\d{1,5}|\*))?)?|(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?)$"
    )
    bad = [s for s in sources if s not in keyword and not origin.match(s)]
    if not sources or bad or ("'none'" in sources and len(sources) > 1):
        raise ImproperlyConfigured(
            f"{name} must be 'none', or sources such as 'self' https://admin.example.com, got {value!r}"
        )
    return " ".join(sources)


def time_zone_name(name: str, value: str) -> str:
    """An IANA time zone name the system knows (Europe/Paris, America/New_York, UTC)."""
    import zoneinfo

    if value not in zoneinfo.available_timezones():
        raise ImproperlyConfigured(f"{name} must be an IANA time zone such as Europe/Paris, got {value!r}")
    return value
