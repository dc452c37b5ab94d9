"""Dashboard pages: thin views that parse the request, call a selector or service, render."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlparse

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from alerts.feedback import dismiss_text
from alerts.models import Alert
from alerts.selectors import BadFeedCursor
from alerts.services import TransitionNotAllowed, alert_transition
from dashboard.rendering import feed_context, live_context
from dashboard.selectors import (
    ENTITY_TYPES,
    FeedFilters,
    alert_panel,
    alerts_by_ids,
    entity_page,
    parse_range,
)
from dashboard.templatetags.dashboard import entity_path
from metrics.selectors import entity_search

staff_required: Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]] = staff_member_required(
    login_url="/accounts/login/"
)
ACTIONS = ("acknowledge", "resolve", "dismiss")


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true" and not request.headers.get(
        "HX-History-Restore-Request"
    )


def _vary_on_htmx(response: HttpResponse) -> HttpResponse:
    response["Vary"] = "HX-Request, Cookie"
    return response


def staff_action(view):
    """Actions answer 403 to a non-staff session instead of redirecting an htmx request to a login page."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not (request.user.is_authenticated and request.user.is_staff):
            return HttpResponse("Staff login required.", status=403, content_type="text/plain")
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@staff_required
def index(request: HttpRequest) -> HttpResponse:
    range_key = parse_range(request.GET.get("range"))
    filters = FeedFilters.parse(
        request.GET.get("severity"), request.GET.get("status"), request.GET.get("muted")
    )
    context = live_context(range_key=range_key, filters=filters, now=timezone.now())
    if _is_htmx(request) and request.headers.get("HX-Target") == "live":
        return _vary_on_htmx(render(request, "dashboard/_live.html", context))
    return _vary_on_htmx(render(request, "dashboard/index.html", context))


@require_GET
@staff_required
def feed_page(request: HttpRequest) -> HttpResponse:
    """The next page of the alert feed (the "show more" link): its rows and the next link, as list items."""
    filters = FeedFilters.parse(
        request.GET.get("severity"), request.GET.get("status"), request.GET.get("muted")
    )
    try:
        context = feed_context(filters=filters, cursor=request.GET.get("cursor") or None)
    except BadFeedCursor:
        return JsonResponse(
            {"error": "invalid cursor", "errors": [{"field": "cursor", "message": "invalid cursor"}]},
            status=400,
        )
    return _vary_on_htmx(render(request, "dashboard/_alert_feed_rows.html", {**context, "panel": True}))


@require_GET
@staff_required
def alert_detail(request: HttpRequest, alert_id: int) -> HttpResponse:
    panel = alert_panel(alert_id=alert_id)
    if panel is None:
        raise Http404("no such alert")
    template = "dashboard/_alert_panel.html" if _is_htmx(request) else "dashboard/alert.html"
    return _vary_on_htmx(render(request, template, {**panel, "in_panel": _is_htmx(request)}))


@require_POST
@staff_action
def alert_action(request: HttpRequest, alert_id: int, action: str) -> HttpResponse:
    if action not in ACTIONS:
        raise Http404("no such action")
    reason = ""
    if action == "dismiss":
        reason = dismiss_text(reason=request.POST.get("reason", ""), note=request.POST.get("note", "")[:400])
    try:
        alert = alert_transition(
            alert_id=alert_id, action=action, user=request.user, now=timezone.now(), reason=reason
        )
    except Alert.DoesNotExist:
        raise Http404("no such alert") from None
    except TransitionNotAllowed as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain")
    except ValueError as exc:
        return HttpResponse(f"Dismissal reason: {exc}.", status=400, content_type="text/plain")
    return alert_changed(request, alert.pk)


def alert_changed(request: HttpRequest, alert_id: int) -> HttpResponse:
    """The answer to an action on an alert: its drawer or page and row re-rendered (htmx), or its page."""
    if not _is_htmx(request):
        return HttpResponseRedirect(f"/alerts/{alert_id}")
    alert = alerts_by_ids(ids=[alert_id])[0]  # the row shows its insight's risk and whether it is muted
    target = request.headers.get("HX-Target")
    if target in ("panel-body", "alert-page"):
        panel = alert_panel(alert_id=alert.pk)
        if panel is None:
            raise Http404("no such alert")
        html = render_to_string(
            "dashboard/_alert_panel.html", {**panel, "in_panel": target == "panel-body"}, request=request
        )
        row = render_to_string(
            "dashboard/_alert_row.html", {"alert": alert, "swap": "true", "panel": True}, request=request
        )
        return HttpResponse(html + row)
    on_dashboard = urlparse(request.headers.get("HX-Current-URL", "")).path == "/"
    return render(request, "dashboard/_alert_row.html", {"alert": alert, "panel": on_dashboard})


@require_GET
@staff_required
def entity(request: HttpRequest, entity_type: str, entity_id: str) -> HttpResponse:
    if entity_type not in ENTITY_TYPES:
        raise Http404("unknown entity type")
    data = entity_page(entity_type=entity_type, entity_id=entity_id, now=timezone.now())
    if data is None:
        return render(
            request,
            "dashboard/entity_missing.html",
            {"entity_type": entity_type, "entity_id": entity_id},
            status=404,
        )
    return render(
        request, "dashboard/entity.html", {**data, "socket_path": "/ws" + entity_path(entity_type, entity_id)}
    )


@require_GET
@staff_required
def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()[:200]
    results = entity_search(query=query)
    if len(results) == 1:
        return HttpResponseRedirect(entity_path(*results[0]))
    links = [{"entity_type": t, "entity_id": i, "url": entity_path(t, i)} for t, i in results]
    return render(request, "dashboard/search.html", {"search_query": query, "results": links})
