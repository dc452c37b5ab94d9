"""What PostgreSQL's text and jsonb refuse, said once for every edge that takes text from clients."""

from __future__ import annotations


def unstorable_text(value: str) -> str | None:
    """Why PostgreSQL would refuse this string (NUL, a lone surrogate), or None when it is storable."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode (a lone surrogate such as \\udfff is not)"
    return None


def printable(value: str) -> str:
    """The string fit for an error body or a log line: lone surrogates and NUL escaped (\\udfff, \\x00)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
