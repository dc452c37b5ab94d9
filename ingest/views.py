"""POST /api/ingest: authenticate, validate, publish, answer 202 — no processing in the request."""

from __future__ import annotations

import json
import logging
import math

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from ingest.keys import api_key_authenticate, key_from_headers
from ingest.ratelimit import buckets
from ingest.services import BodyError, events_ingest
from ingest.streams import StreamUnavailable
from iops.lib.http import json_error

logger = logging.getLogger(__name__)


@csrf_exempt
def ingest(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return json_error(
            405, "method not allowed", [{"field": "method", "message": "use POST"}], Allow="POST"
        )
    plaintext = key_from_headers(request.headers)
    api_key = api_key_authenticate(plaintext) if plaintext else None
    if api_key is None:
        return json_error(
            401,
            "authentication required",
            [{"field": "Authorization", "message": "missing or unknown API key (Bearer KEY or X-API-Key)"}],
            WWW_Authenticate='Bearer realm="iops"',
        )
    content_type = request.content_type or ""
    if content_type != "application/json":
        return json_error(
            415, "unsupported media type", [{"field": "Content-Type", "message": "must be application/json"}]
        )
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = settings.INGEST_MAX_BODY_BYTES
    if length > limit:
        return json_error(
            413, "body too large", [{"field": "body", "message": f"must be at most {limit} bytes"}]
        )
    raw = request.read(limit + 1)  # bounded even when Content-Length lies or is absent
    if len(raw) > limit:
        return json_error(
            413, "body too large", [{"field": "body", "message": f"must be at most {limit} bytes"}]
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return json_error(400, "invalid JSON", [{"field": "body", "message": "is not valid JSON"}])

    rate = api_key.rate_limit_per_sec or settings.INGEST_RATE_LIMIT_PER_SEC
    cost = len(body["events"]) if isinstance(body, dict) and isinstance(body.get("events"), list) else 1
    wait = buckets.take(
        f"key:{api_key.pk}", cost=max(cost, 1), rate=rate, burst=max(settings.INGEST_RATE_LIMIT_BURST, rate)
    )
    if wait > 0:
        return json_error(
            429,
            "rate limit exceeded",
            [{"field": "Authorization", "message": f"this key may send {rate:g} events/s"}],
            Retry_After=str(max(1, math.ceil(wait))),
        )
    try:
        outcome = events_ingest(body=body, now=timezone.now())
    except BodyError as exc:
        return json_error(400, exc.message, exc.errors)
    except StreamUnavailable:
        logger.warning("stream unavailable, ingest refused")
        return json_error(
            503, "stream unavailable", [{"field": "stream", "message": "try again shortly"}], Retry_After="2"
        )

    if not outcome.batch:
        result = outcome.results[0]
        if result["status"] == "rejected":
            return json_error(400, "invalid event", result["errors"])
        return JsonResponse({"accepted": 1, "event_ids": [result["event_id"]]}, status=202)
    accepted = len(outcome.accepted)
    body_out: dict = {}
    if not accepted:
        body_out = {
            "error": "no event accepted",
            "errors": [
                {"field": f"events[{r['index']}].{e['field']}", "message": e["message"]}
                for r in outcome.results
                for e in r["errors"]
            ][:100],
        }
    return JsonResponse(
        {
            **body_out,
            "accepted": accepted,
            "rejected": outcome.rejected,
            "event_ids": [e["event_id"] for e in outcome.accepted],
            "results": outcome.results,
        },
        status=202 if accepted else 400,
    )
