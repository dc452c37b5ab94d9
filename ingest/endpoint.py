"""POST /api/ingest, independent of the web framework: each step returns a Reply or lets the request on.

Two front ends share these steps so behaviour, status codes and error bodies cannot drift: the Django
view (ingest/views.py) and the lean ASGI route (ingest/asgi.py) that serves the hot path without
Django's request machinery. Order of checks: 405, 401, 403 (no ingest scope), 415, 413 (declared
length, then actual), 400 invalid JSON, 429, then validation and publishing (400 / 202 / 503).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError

from ingest import counters
from ingest.keys import KeyIdentity, api_key_authenticate_cached
from ingest.ratelimit import key_burst, shared_buckets
from ingest.services import BodyError, IngestOutcome, events_ingest
from ingest.streams import StreamUnavailable
from iops.lib.http import RETRY_AFTER_UNAVAILABLE

logger = logging.getLogger("ingest.endpoint")


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def error(status: int, message: str, errors: list[dict[str, str]], **headers: str) -> Reply:
    """The one error shape of the API (same as iops.lib.http.json_error)."""
    return Reply(
        status, {"error": message, "errors": errors}, {k.replace("_", "-"): v for k, v in headers.items()}
    )


def method_not_allowed() -> Reply:
    return error(405, "method not allowed", [{"field": "method", "message": "use POST"}], Allow="POST")


def unauthenticated() -> Reply:
    return error(
        401,
        "authentication required",
        [{"field": "Authorization", "message": "missing or unknown API key (Bearer KEY or X-API-Key)"}],
        WWW_Authenticate='Bearer realm="iops"',
    )


def missing_scope(key: KeyIdentity, scope: str = "ingest") -> Reply | None:
    """403 for a valid key that was not granted this scope (issue 21: keys are least privilege)."""
    if scope in key.scopes:
        return None
    return error(
        403,
        "forbidden",
        [{"field": "Authorization", "message": f"this API key lacks the {scope} scope (admin → API keys)"}],
    )


def too_large() -> Reply:
    limit = settings.INGEST_MAX_BODY_BYTES
    return error(413, "body too large", [{"field": "body", "message": f"must be at most {limit} bytes"}])


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def precheck(*, content_type: str | None, content_length: str | None) -> Reply | None:
    """415 for anything but JSON, 413 when the declared length is over the limit (before reading)."""
    if media_type(content_type) != "application/json":
        return error(
            415, "unsupported media type", [{"field": "Content-Type", "message": "must be application/json"}]
        )
    try:
        length = int(content_length or 0)
    except ValueError:
        length = 0
    if length > settings.INGEST_MAX_BODY_BYTES:
        return too_large()
    return None


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN/Infinity; JSON (and jsonb) do not


def parse(raw: bytes) -> tuple[Any, Reply | None]:
    if len(raw) > settings.INGEST_MAX_BODY_BYTES:
        return None, too_large()
    try:
        return json.loads(raw, parse_constant=_no_constants), None
    except (ValueError, RecursionError):
        return None, error(400, "invalid JSON", [{"field": "body", "message": "is not valid JSON"}])


def rate_limited(*, key: KeyIdentity, body: Any) -> Reply | None:
    """Per-key token bucket counted in events (a batch of 500 costs 500), its burst scaled to the key's
    rate, shared by every web process through Redis when REDIS_URL is set."""
    rate = key.rate_limit_per_sec or settings.INGEST_RATE_LIMIT_PER_SEC
    cost = len(body["events"]) if isinstance(body, dict) and isinstance(body.get("events"), list) else 1
    wait = shared_buckets().take(f"key:{key.pk}", cost=max(cost, 1), rate=rate, burst=key_burst(rate))
    if wait <= 0:
        return None
    return error(
        429,
        "rate limit exceeded",
        [{"field": "Authorization", "message": f"this key may send {rate:g} events/s"}],
        Retry_After=str(max(1, math.ceil(wait))),
    )


def unavailable(errors: list[dict[str, str]] | None = None) -> Reply:
    return error(
        503,
        "stream unavailable",
        errors or [{"field": "stream", "message": "try again shortly"}],
        Retry_After=RETRY_AFTER_UNAVAILABLE,
    )


def authenticate(plaintext: str | None) -> KeyIdentity | Reply:
    """The key for this secret, or the reply that refuses the request: 401 for a missing, unknown or
    revoked key; 503 with Retry-After while the database that holds the keys cannot be reached (keys
    already in the in-memory cache keep working through the outage)."""
    if not plaintext:
        return unauthenticated()
    try:
        key = api_key_authenticate_cached(plaintext)
    except (OperationalError, InterfaceError) as exc:
        logger.warning("api key lookup failed, ingest refused", extra={"error": exc.__class__.__name__})
        counters.count(requests_unavailable=1)
        return error(
            503,
            "service unavailable",
            [{"field": "Authorization", "message": "the key cannot be checked right now; try again shortly"}],
            Retry_After=RETRY_AFTER_UNAVAILABLE,
        )
    return key if key is not None else unauthenticated()


def outcome_reply(outcome: IngestOutcome) -> Reply:
    if not outcome.batch:
        result = outcome.results[0]
        if result["status"] == "accepted":
            return Reply(202, {"accepted": 1, "event_ids": [result["event_id"]]})
        if outcome.unpublished:
            return unavailable(result["errors"])
        return error(400, "invalid event", result["errors"])
    accepted = len(outcome.accepted)
    body: dict[str, Any] = {}
    status = 202
    headers: dict[str, str] = {}
    if not accepted:
        # Nothing taken: 503 when the stream refused valid events (retrying helps), else 400.
        status = 503 if outcome.unpublished else 400
        if outcome.unpublished:
            headers["Retry-After"] = RETRY_AFTER_UNAVAILABLE
        body = {
            "error": "stream unavailable" if outcome.unpublished else "no event accepted",
            "errors": [
                {"field": f"events[{r['index']}].{e['field']}", "message": e["message"]}
                for r in outcome.results
                for e in r["errors"]
            ][:100],
        }
    body.update(
        {
            "accepted": accepted,
            "rejected": outcome.rejected,
            "event_ids": [e["event_id"] for e in outcome.accepted],
            "results": outcome.results,
        }
    )
    return Reply(status, body, headers)


def ingest_body(*, key: KeyIdentity, raw: bytes, now: datetime) -> Reply:
    """Everything after authentication and the pre-checks; blocking (stream I/O), run off the event loop."""
    body, reply = parse(raw)
    if reply is not None:
        return reply
    reply = rate_limited(key=key, body=body)
    if reply is not None:
        return reply
    try:
        outcome = events_ingest(body=body, now=now)
    except BodyError as exc:
        return error(400, exc.message, exc.errors)
    except StreamUnavailable as exc:
        logger.warning("stream unavailable, ingest refused", extra={"error": str(exc)[:200]})
        counters.count(requests_unavailable=1)
        return unavailable()
    if outcome.unpublished:
        logger.warning("stream refused events", extra={"unpublished": outcome.unpublished})
    counters.count(events_accepted=len(outcome.accepted), events_rejected=outcome.rejected)  # issue 9
    return outcome_reply(outcome)
