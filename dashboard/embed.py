"""Embeddable panels (issue 19): the KPI strip or one chart on a page of its own, for the platform to
show in an iframe of its admin, read-only and live like the dashboard.

A panel is opened with a signed, expiring link (`/embed/<panel>/?t=…`, django.core.signing; minted by
`manage.py embed_link`, by GET /api/embed-link with a read key, or by staff), or with a read-scoped API
key in the request headers (a proxy fetching the page). The page's socket, /ws/embed/<panel>/, takes
the same signed token: a browser cannot put a key in a WebSocket's headers, and the token names the
panel and range it may show, so it opens nothing else. The socket closes when the token expires.

Framing: every page answers `Content-Security-Policy: frame-ancestors 'none'`
(iops.lib.http.FrameAncestorsMiddleware) except these, which answer FRAME_ANCESTORS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET
from ninja import Field, Query, Router, Schema

from dashboard.selectors import DEFAULT_RANGE, RANGES, charts, kpis
from ingest.keys import api_key_authenticate, key_from_headers
from iops.lib.http import FieldHttpError

SALT = "iops.embed.v1"


@dataclass(frozen=True)
class Panel:
    title: str
    chart: str | None = None  # the key in selectors.charts(); None: the KPI strip
    aria: str = ""


PANELS: dict[str, Panel] = {
    "kpis": Panel("Key figures"),
    "events": Panel("Events per minute", "events", "Line chart of events received per minute, last hour"),
    "sessions": Panel("Sessions started vs completed", "sessions", "Line chart of sessions over the range"),
    "ib_reasons": Panel("IB calls by reason", "ib_reasons", "Bar chart of support calls by reason"),
    "health": Panel("Student health scores", "health", "Histogram of students by health score"),
    "supply_demand": Panel("Supply vs demand by subject", "supply_demand", "Bar chart by subject"),
}


class EmbedRefused(Exception):
    """The token is missing, forged, for another panel, or expired."""


@dataclass(frozen=True)
class Grant:
    panel: str
    range_key: str
    expires_at: datetime


def embed_token(*, panel: str, range_key: str = DEFAULT_RANGE, ttl_seconds: int, now: datetime) -> str:
    """A signed token for one panel and range, valid `ttl_seconds` (at most EMBED_LINK_MAX_AGE_SECONDS)."""
    if panel not in PANELS:
        raise ValueError(f"panel must be one of {', '.join(PANELS)}")
    if range_key not in RANGES:
        raise ValueError(f"range must be one of {', '.join(RANGES)}")
    if not 1 <= ttl_seconds <= settings.EMBED_LINK_MAX_AGE_SECONDS:
        raise ValueError(f"ttl must be 1 to {settings.EMBED_LINK_MAX_AGE_SECONDS} seconds")
    payload = {"p": panel, "r": range_key, "e": int(now.timestamp()) + ttl_seconds}
    return signing.dumps(payload, salt=SALT, compress=True)


def embed_grant(token: str | None, *, panel: str) -> Grant:
    """What a token allows, or EmbedRefused. Checked twice: the signature's age against the global
    cap (max_age), then the link's own expiry."""
    if not token or len(token) > 500:
        raise EmbedRefused("a signed embed link is required")
    try:
        payload = signing.loads(token, salt=SALT, max_age=settings.EMBED_LINK_MAX_AGE_SECONDS)
    except signing.SignatureExpired:
        raise EmbedRefused("this embed link has expired") from None
    except signing.BadSignature:
        raise EmbedRefused("this embed link is not valid") from None
    if not isinstance(payload, dict) or payload.get("p") != panel or payload.get("r") not in RANGES:
        raise EmbedRefused("this embed link is for another panel")
    expires = payload.get("e")
    if not isinstance(expires, int) or expires <= time.time():
        raise EmbedRefused("this embed link has expired")
    return Grant(panel=panel, range_key=payload["r"], expires_at=datetime.fromtimestamp(expires, tz=UTC))


def embed_url(*, panel: str, range_key: str = DEFAULT_RANGE, ttl_seconds: int, now: datetime) -> dict:
    """The public link (PUBLIC_BASE_URL) to a panel, and when it expires."""
    token = embed_token(panel=panel, range_key=range_key, ttl_seconds=ttl_seconds, now=now)
    return {
        "url": f"{settings.PUBLIC_BASE_URL}/embed/{panel}/?{urlencode({'t': token})}",
        "panel": panel,
        "range": range_key,
        "expires_at": datetime.fromtimestamp(int(now.timestamp()) + ttl_seconds, tz=UTC).isoformat(),
    }


def embed_context(*, panel: str, range_key: str, now: datetime) -> dict[str, Any]:
    spec = PANELS[panel]
    context: dict[str, Any] = {"panel": panel, "spec": spec, "range_key": range_key}
    if spec.chart is None:
        context["kpis"] = kpis(range_key=range_key, now=now)
    else:
        context["chart"] = charts(range_key=range_key, now=now)[spec.chart]
        context["chart_id"] = f"chart-{spec.chart.replace('_', '-')}"
    return context


def render_embed_state(*, panel: str, range_key: str, now: datetime) -> str:
    """The panel's live part as out-of-band fragments: sent on connect and after each change."""
    context = {**embed_context(panel=panel, range_key=range_key, now=now), "oob": True}
    return render_to_string("dashboard/_embed_panel.html", context)


def _request_grant(request: HttpRequest, panel: str) -> Grant:
    """The token in the link; else a read key in the headers or a staff session (the range from the
    query), for which the page mints a short token for its socket."""
    token = request.GET.get("t")
    if token:
        return embed_grant(token, panel=panel)
    user = getattr(request, "user", None)
    plaintext = key_from_headers(request.headers)
    key = api_key_authenticate(plaintext) if plaintext else None
    staff = user is not None and user.is_authenticated and user.is_staff
    if not staff and (key is None or "read" not in key.scopes):
        raise EmbedRefused("a signed embed link or an API key with the read scope is required")
    range_key = request.GET.get("range") or DEFAULT_RANGE
    if range_key not in RANGES:
        range_key = DEFAULT_RANGE
    ttl = min(3600, settings.EMBED_LINK_MAX_AGE_SECONDS)
    return Grant(panel, range_key, datetime.fromtimestamp(int(time.time()) + ttl, tz=UTC))


def _framed(response: HttpResponse) -> HttpResponse:
    response.frame_ancestors = settings.FRAME_ANCESTORS  # type: ignore[attr-defined]
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"  # the token is in this page's URL
    return response


@require_GET
@xframe_options_exempt  # the CSP frame-ancestors of FRAME_ANCESTORS says who may frame it
def embed_view(request: HttpRequest, panel: str) -> HttpResponse:
    if panel not in PANELS:
        return _framed(HttpResponse("No such panel.", status=404, content_type="text/plain"))
    try:
        grant = _request_grant(request, panel)
    except EmbedRefused as exc:
        return _framed(HttpResponse(f"{exc}.", status=403, content_type="text/plain"))
    now = timezone.now()
    token = request.GET.get("t") or embed_token(
        panel=panel,
        range_key=grant.range_key,
        ttl_seconds=max(1, int(grant.expires_at.timestamp() - now.timestamp())),
        now=now,
    )
    context = {
        **embed_context(panel=panel, range_key=grant.range_key, now=now),
        "socket_url": f"/ws/embed/{panel}/?{urlencode({'t': token})}",
        "expires_at": grant.expires_at,
    }
    html = render_to_string("dashboard/embed.html", context, request=request)
    return _framed(HttpResponse(html))


router = Router(tags=["embed"])
PanelName = Literal["kpis", "events", "sessions", "ib_reasons", "health", "supply_demand"]
RangeName = Literal["1h", "24h", "7d", "30d"]


class EmbedLink(Schema):
    url: str = Field(description="PUBLIC_BASE_URL/embed/<panel>/?t=… — put it in an iframe's src")
    panel: str
    range: str
    expires_at: datetime


@router.get("/embed-link", response=EmbedLink, summary="A signed, expiring link to an embeddable panel")
def get_embed_link(
    request,
    panel: PanelName,
    range: RangeName = "24h",  # noqa: A002 - the public name, as /api/kpis
    ttl: int = Query(3600, ge=60, description="seconds the link stays valid (≤ EMBED_LINK_MAX_AGE_SECONDS)"),
):
    if ttl > settings.EMBED_LINK_MAX_AGE_SECONDS:
        raise FieldHttpError(
            400,
            "invalid request",
            [{"field": "ttl", "message": f"at most {settings.EMBED_LINK_MAX_AGE_SECONDS} seconds"}],
        )
    return embed_url(panel=panel, range_key=range, ttl_seconds=ttl, now=timezone.now())
