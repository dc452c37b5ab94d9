from __future__ import annotations

import asyncio
import hmac
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from ingest.streams import StreamNotDurable, StreamUnavailable, get_stream
from iops.lib.http import json_error
from iops.ops import worker_heartbeat_age

logger = logging.getLogger(__name__)


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_stream() -> str:
    stream = get_stream()
    stream.ping()
    if settings.REDIS_REQUIRE_AOF:
        problem = stream.durability_problem()
        if problem:
            raise StreamNotDurable(problem)
    return "ok"


def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")
    if hasattr(layer, "connection"):  # channels-redis: a real round trip

        async def _ping():
            conn = layer.connection(0)
            # channels-redis sets no socket timeouts: a silent peer must not hang the probe
            await asyncio.wait_for(conn.ping(), timeout=settings.HEALTHZ_TIMEOUT_SECONDS)

        async_to_sync(_ping)()
    return "ok"


class StaleWorker(Exception):
    pass


def _check_worker() -> str:
    """The freshest WorkerHeartbeat must be at most WORKER_HEARTBEAT_MAX_AGE_SECONDS old.

    Run only when a worker is expected (WORKER_EXPECTED, on unless IOPS_TESTING); a deployment that
    runs no stream consumer on purpose sets it false and /healthz leaves the check out.
    """
    age = worker_heartbeat_age(now=timezone.now())
    if age is None:
        raise StaleWorker("no worker heartbeat yet")
    if age > settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS:
        raise StaleWorker(f"last heartbeat {age:.0f}s ago")
    return "ok"


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Every check, or only those named in `?checks=database,stream,…` — a load balancer probing a web
    node asks for what serving needs, so a worker outage does not take the web nodes out too."""
    checks: dict[str, str] = {}
    available = {
        "database": _check_database,
        "stream": _check_stream,
        "channel_layer": _check_channel_layer,
        "worker": _check_worker,
    }
    wanted = request.GET.get("checks")
    if wanted is None:
        names = [n for n in available if n != "worker" or settings.WORKER_EXPECTED]
    else:
        names = [n.strip() for n in wanted.split(",") if n.strip()]
        unknown = [n for n in names if n not in available]
        if unknown or not names:
            return json_error(
                400,
                "unknown health check",
                [
                    {
                        "field": "checks",
                        "message": f"name one or more of {', '.join(available)}, comma-separated",
                    }
                ],
            )
    named = [(n, available[n]) for n in dict.fromkeys(names)]
    for name, check in named:
        try:
            checks[name] = check()
        except (StaleWorker, StreamNotDurable) as exc:
            logger.warning("health check failed", extra={"check": name, "error": str(exc)})
            checks[name] = f"error: {exc}"
        except (StreamUnavailable, Exception) as exc:  # noqa: BLE001 - any failure is reported, never raised
            logger.warning("health check failed", extra={"check": name, "error": exc.__class__.__name__})
            checks[name] = f"error: {exc.__class__.__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


def _metrics_allowed(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text for staff sessions or `Authorization: Bearer <METRICS_TOKEN>`."""
    if not _metrics_allowed(request):
        return json_error(
            401,
            "authentication required",
            [{"field": "Authorization", "message": "staff session or Bearer METRICS_TOKEN"}],
            WWW_Authenticate='Bearer realm="metrics"',
        )
    from prometheus_client import CONTENT_TYPE_LATEST

    from iops.prom import render

    return HttpResponse(render(now=timezone.now()), content_type=CONTENT_TYPE_LATEST)
