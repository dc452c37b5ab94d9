"""API keys: `iops_<prefix>_<secret>`; the database holds the prefix and a SHA-256 of the whole key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.utils import timezone

from ingest.models import ApiKey

KEY_PREFIX = "iops_"


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str


def _hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def api_key_create(*, name: str, rate_limit_per_sec: float | None = None) -> IssuedKey:
    prefix = secrets.token_hex(4)
    plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        name=name, prefix=prefix, key_hash=_hash(plaintext), rate_limit_per_sec=rate_limit_per_sec
    )
    return IssuedKey(api_key=key, plaintext=plaintext)


def api_key_revoke(*, api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def _split(plaintext: str) -> str | None:
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 128:
        return None
    prefix, _, secret = plaintext[len(KEY_PREFIX) :].partition("_")
    return prefix if prefix and secret else None


def api_key_authenticate(plaintext: str) -> ApiKey | None:
    """Return the active key for this secret, or None. Compares hashes in constant time."""
    prefix = _split(plaintext)
    if prefix is None:
        return None
    key = ApiKey.objects.filter(prefix=prefix, revoked_at__isnull=True).first()
    if key is None or not hmac.compare_digest(key.key_hash, _hash(plaintext)):
        return None
    now = timezone.now()
    # last_used_at at minute resolution: one write a minute per key, not one per request.
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key


def key_from_headers(headers) -> str | None:
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("X-API-Key") or None
