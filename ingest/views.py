"""POST /api/ingest through Django: authenticate, validate, publish, answer 202 — no processing in the
request. The steps live in ingest/endpoint.py, shared with the lean ASGI route (ingest/asgi.py)."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from ingest import endpoint
from ingest.keys import key_from_headers


def _response(reply: endpoint.Reply) -> HttpResponse:
    response = HttpResponse(reply.content(), status=reply.status, content_type="application/json")
    for name, value in reply.headers.items():
        response[name] = value
    return response


@csrf_exempt
def ingest(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _response(endpoint.method_not_allowed())
    key = endpoint.authenticate(key_from_headers(request.headers))
    if isinstance(key, endpoint.Reply):
        return _response(key)
    reply = endpoint.missing_scope(key) or endpoint.precheck(
        content_type=request.META.get("CONTENT_TYPE"), content_length=request.META.get("CONTENT_LENGTH")
    )
    if reply is not None:
        return _response(reply)
    raw = request.read(settings.INGEST_MAX_BODY_BYTES + 1)  # bounded even when Content-Length lies
    return _response(endpoint.ingest_body(key=key, raw=raw, now=timezone.now()))
