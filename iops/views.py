from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from ingest.streams import StreamUnavailable, get_stream

logger = logging.getLogger(__name__)


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_stream() -> str:
    get_stream().ping()
    return "ok"


def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    if hasattr(layer, "connection"):  # channels-redis: a real round trip

        async def _ping():
            conn = layer.connection(0)
            await conn.ping()

        async_to_sync(_ping)()
    return "ok"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    for name, check in (
        ("database", _check_database),
        ("stream", _check_stream),
        ("channel_layer", _check_channel_layer),
    ):
        try:
            checks[name] = check()
        except (StreamUnavailable, Exception) as exc:  # noqa: BLE001 - any failure is reported, never raised
            logger.warning("health check failed", extra={"check": name, "error": exc.__class__.__name__})
            checks[name] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )
