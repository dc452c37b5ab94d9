"""Dashboard actions that create silences (issue 19): "Snooze 4 h" (this entity and type), "Silence this
type for this cell until …" on an alert row or drawer, and "Silence this type until …" on a group row.
Staff only (as acknowledging), CSRF-checked; htmx answers re-render the row, drawer or group muted."""

from __future__ import annotations

from datetime import datetime

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST

from alerts.models import ACTIVE_STATUSES, Alert, EntityType
from alerts.silences import SNOOZE, SilenceInvalid, silence_alert_ids, silence_create
from dashboard.selectors import FeedGroup, alerts_by_ids
from dashboard.views import alert_changed, staff_action
from iops.lib.realtime import Change, publish_change


def _invalid(errors: list[tuple[str, str]]) -> JsonResponse:
    return JsonResponse(
        {"error": "invalid silence", "errors": [{"field": f, "message": m} for f, m in errors]}, status=400
    )


def _until(request: HttpRequest) -> datetime:
    """The form's `until` (a datetime-local, in the current time zone); SilenceInvalid when unusable."""
    raw = request.POST.get("until", "").strip()
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise SilenceInvalid([("until", "a date and time such as 2026-03-02T18:00")]) from None
    return timezone.make_aware(value) if timezone.is_naive(value) else value


def _create(request: HttpRequest, **matchers) -> HttpResponse | None:
    """Create the silence and push the rows it mutes to every open dashboard; a 400 response when the
    form is invalid, None when it worked."""
    now = timezone.now()
    try:
        ends_at = matchers.pop("ends_at", None) or _until(request)
        reason = matchers.pop("reason", None) or request.POST.get("reason", "")
        silence = silence_create(reason=reason, ends_at=ends_at, now=now, user=request.user, **matchers)
    except SilenceInvalid as exc:
        return _invalid(exc.errors)
    ids = silence_alert_ids(silence)
    if ids:
        publish_change(Change(alerts_updated=ids))
    return None


def _alert(alert_id: int) -> Alert:
    alert = Alert.objects.filter(pk=alert_id, status__in=ACTIVE_STATUSES).first()
    if alert is None:
        raise Http404("no such active alert")
    return alert


@require_POST
@staff_action
def alert_snooze(request: HttpRequest, alert_id: int) -> HttpResponse:
    """Mute this entity's alerts of this type for 4 hours."""
    alert = _alert(alert_id)
    reason = request.POST.get("reason", "").strip() or f"snoozed 4 h from the dashboard (alert {alert.pk})"
    failed = _create(
        request,
        reason=reason,
        alert_type=alert.type,
        entity_type=alert.entity_type,
        entity_id=alert.entity_id,
        ends_at=timezone.now() + SNOOZE,
    )
    return failed or alert_changed(request, alert.pk)


@require_POST
@staff_action
def alert_silence(request: HttpRequest, alert_id: int) -> HttpResponse:
    """Mute this alert type until a time: for this cell when the alert is about one, else everywhere."""
    alert = _alert(alert_id)
    cell = alert.entity_id if alert.entity_type == EntityType.SUBJECT_REGION else ""
    failed = _create(request, alert_type=alert.type, cell=cell)
    return failed or alert_changed(request, alert.pk)


@require_POST
@staff_action
def group_silence(request: HttpRequest) -> HttpResponse:
    """Mute a group row's alert type until a time; answers the group re-rendered."""
    alert_type = request.POST.get("alert_type", "")
    failed = _create(request, alert_type=alert_type)
    if failed:
        return failed
    ids = [int(i) for i in request.POST.getlist("alert_ids") if i.isdigit()][:500]
    alerts = sorted(alerts_by_ids(ids=ids), key=lambda a: (a.last_seen, a.pk), reverse=True)
    if not alerts:
        return HttpResponse(status=204)
    first = alerts[0]
    group = FeedGroup(first.type, first.get_type_display(), first.severity, alerts)
    return render(request, "dashboard/_alert_group.html", {"group": group, "panel": True})
