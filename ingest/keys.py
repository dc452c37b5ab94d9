"""API keys: `iops_<prefix>_<secret>`; the database holds the prefix and a SHA-256 of the whole key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from ingest.models import API_KEY_SCOPES, ApiKey, default_api_key_scopes

KEY_PREFIX = "iops_"


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    plaintext: str


def _hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def api_key_create(
    *, name: str, rate_limit_per_sec: float | None = None, scopes: list[str] | tuple[str, ...] | None = None
) -> IssuedKey:
    """A new key; `scopes` defaults to least privilege (ingest only)."""
    scopes = list(dict.fromkeys(scopes)) if scopes is not None else default_api_key_scopes()
    unknown = [s for s in scopes if s not in API_KEY_SCOPES]
    if unknown or not scopes:
        raise ValueError(
            f"scopes must be one or more of {', '.join(API_KEY_SCOPES)}, got {unknown or 'none'}"
        )
    prefix = secrets.token_hex(4)
    plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        key_hash=_hash(plaintext),
        rate_limit_per_sec=rate_limit_per_sec,
        scopes=scopes,
    )
    return IssuedKey(api_key=key, plaintext=plaintext)


def api_key_revoke(*, api_key: ApiKey) -> None:
    api_keys_revoke(keys=ApiKey.objects.filter(pk=api_key.pk))


def api_keys_revoke(*, keys) -> int:
    """Revoke a queryset of keys; this process forgets them at once, other processes within
    INGEST_KEY_CACHE_SECONDS."""
    count = keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
    key_cache.clear()
    return count


def _split(plaintext: str) -> str | None:
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 128:
        return None
    prefix, _, secret = plaintext[len(KEY_PREFIX) :].partition("_")
    # Issued prefixes are hex (secrets.token_hex): anything else is no key and never reaches a query.
    return (
        prefix if prefix and secret and len(prefix) <= 16 and prefix.isascii() and prefix.isalnum() else None
    )


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


@dataclass(frozen=True)
class KeyIdentity:
    """What the ingest hot path needs of a key; cached briefly so most requests skip the database."""

    pk: int
    rate_limit_per_sec: float | None
    scopes: frozenset[str] = frozenset()


MISS = object()


class KeyCache:
    """plaintext hash -> (expiry, KeyIdentity or None for an unknown/revoked key)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, KeyIdentity | None]] = {}

    def get(self, plaintext: str):
        digest = _hash(plaintext)
        entry = self._entries.get(digest)
        # Wall clock (so tests can move it); an entry is trusted only within its TTL either way.
        if entry is None or not 0 <= entry[0] - time.time() <= settings.INGEST_KEY_CACHE_SECONDS:
            return MISS
        return entry[1]

    def put(self, plaintext: str, identity: KeyIdentity | None) -> None:
        ttl = settings.INGEST_KEY_CACHE_SECONDS
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) > 10_000:  # bounded: a flood of made-up keys cannot grow it
                self._entries.clear()
            self._entries[_hash(plaintext)] = (time.time() + ttl, identity)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


key_cache = KeyCache()


def api_key_authenticate_cached(plaintext: str) -> KeyIdentity | None:
    """api_key_authenticate behind the in-memory cache (revocation takes effect within the TTL)."""
    cached = key_cache.get(plaintext)
    if cached is not MISS:
        return cached
    key = api_key_authenticate(plaintext)
    identity = (
        KeyIdentity(pk=key.pk, rate_limit_per_sec=key.rate_limit_per_sec, scopes=frozenset(key.scopes))
        if key
        else None
    )
    key_cache.put(plaintext, identity)
    return identity


def key_from_headers(headers) -> str | None:
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return headers.get("X-API-Key") or None
