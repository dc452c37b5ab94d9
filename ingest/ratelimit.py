"""Per-key token bucket, in process memory (each web process enforces its share)."""

from __future__ import annotations

import threading
import time


class TokenBuckets:
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


buckets = TokenBuckets()
