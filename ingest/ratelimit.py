"""Per-key token buckets counted in events. With REDIS_URL the buckets live in Redis, shared by every
web process (N processes no longer allow N × the rate); without it, in process memory."""

from __future__ import annotations

import logging
import threading
import time
from functools import cache

from django.conf import settings

logger = logging.getLogger(__name__)

# One atomic step of a bucket, on Redis' clock (every process sees the same time): refill, take `cost`
# when it fits (or when the bucket is full and the cost is more than it can ever hold: one oversized
# batch then waits its cost out), and answer the wait in seconds as a string (Lua numbers reply as ints).
TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= cost or (tokens >= burst and cost > burst) then
  tokens = tokens - cost
elseif rate > 0 then
  wait = (math.min(cost, burst) - tokens) / rate
else
  wait = 60
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst + math.max(cost, 0)) / math.max(rate, 0.001)) + 60)
return tostring(wait)
"""


class TokenBuckets:
    """In process memory: each process enforces the full rate on its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key: str, *, cost: float, rate: float, burst: float) -> float:
        """Take `cost` tokens; returns 0 when allowed, else the seconds to wait before retrying."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (burst, now))
            tokens = min(burst, tokens + (now - last) * rate)
            if tokens >= cost or (tokens >= burst and cost > burst):
                self._state[key] = (tokens - cost, now)
                return 0.0
            self._state[key] = (tokens, now)
            return (min(cost, burst) - tokens) / rate if rate > 0 else 60.0

    def reset(self) -> None:
        with self._lock:
            self._state.clear()


class RedisTokenBuckets:
    """The same buckets in Redis (one hash per key, expiring once refilled). While Redis cannot be
    reached the process falls back to its own buckets: the stream, not the limiter, decides whether
    ingest is available."""

    def __init__(self, url: str, prefix: str, fallback: TokenBuckets):
        import redis

        self._errors = (redis.ConnectionError, redis.TimeoutError)
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self._take = client.register_script(TAKE)
        self.prefix = prefix
        self.fallback = fallback

    def take(self, key: str, *, cost: float, rate: float, burst: float) -> float:
        try:
            return float(self._take(keys=[f"{self.prefix}:{key}"], args=[cost, rate, burst]))
        except self._errors as exc:
            logger.warning(
                "rate limiter: Redis unavailable, this process's buckets apply",
                extra={"error": str(exc)[:200]},
            )
            return self.fallback.take(key, cost=cost, rate=rate, burst=burst)


buckets = TokenBuckets()


@cache
def shared_buckets() -> TokenBuckets | RedisTokenBuckets:
    """The buckets ingest uses: Redis when REDIS_URL is set, else this process's."""
    if settings.REDIS_URL:
        return RedisTokenBuckets(settings.REDIS_URL, f"{settings.IOPS_STREAM_KEY}:ratelimit", buckets)
    return buckets


def key_burst(rate: float) -> float:
    """A key's burst: as many seconds of its own rate as the default burst is of the default rate (a key
    at 10 events/s may send 20 at once by default, not the global 10,000)."""
    seconds = settings.INGEST_RATE_LIMIT_BURST / settings.INGEST_RATE_LIMIT_PER_SEC
    return max(1.0, rate * seconds)
