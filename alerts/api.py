from __future__ import annotations

from django.http import Http404
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError
from pydantic import field_validator

from alerts.feedback import dismiss_text
from alerts.models import Alert, DismissReason, EntityType, Severity, Status
from alerts.selectors import alert_as_dict, alert_history, alert_list
from alerts.services import TransitionNotAllowed, alert_transition
from iops.lib.http import FieldHttpError
from iops.lib.text import unstorable_text

router = Router(tags=["alerts"])


class DismissIn(Schema):
    reason: str = Field(
        min_length=1,
        max_length=100,
        description="why: one of " + ", ".join(DismissReason.values) + " (graded on /quality); "
        "any other text is kept as written and counted as other",
    )
    note: str = Field("", max_length=400, description="optional free text, stored after the reason")

    @field_validator("reason", "note")
    @classmethod
    def _storable(cls, value: str) -> str:
        problem = unstorable_text(value)  # a NUL or a lone surrogate is a 400, not a database error
        if problem is not None:
            raise ValueError(problem)
        return value


@router.get("", summary="Alerts, newest first, with filters")
def list_alerts(
    request,
    status: Status | None = None,
    severity: Severity | None = None,
    type: str | None = None,  # noqa: A002
    entity_type: EntityType | None = None,
    entity_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    q: str | None = Query(
        None, min_length=1, max_length=100, description="entity id or message contains this, any case"
    ),
):
    before = None
    if cursor:
        if not cursor.isdigit():
            raise FieldHttpError(
                400, "invalid cursor", [{"field": "cursor", "message": "not a cursor this list gave out"}]
            )
        before = int(cursor)
    limit = max(1, min(limit, 500))
    rows, more = alert_list(
        filters={
            "status": status,
            "severity": severity,
            "type": type,
            "entity_type": entity_type,
            "entity_id": entity_id,
        },
        before_id=before,
        limit=limit,
        q=q,
    )
    return {"results": [alert_as_dict(a) for a in rows], "next": str(rows[-1].pk) if more and rows else None}


# The error shape is the ApiError component iops/api.py adds to the document.
CONFLICT = {
    "responses": {
        "409": {
            "description": "the alert's lifecycle does not allow this transition",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}},
        }
    }
}


def key_label(auth) -> str:
    """The API key that authenticated the request, as recorded on the alert ("" for a staff session)."""
    prefix = getattr(auth, "prefix", None)
    return f"{auth.name} ({prefix}…)" if prefix else ""


@router.get("/{alert_id}", summary="One alert, with its history (who acted: a user or an API key)")
def get_alert(request, alert_id: int):
    history = alert_history(alert_id=alert_id)
    if history is None:
        raise Http404(f"no alert {alert_id}")
    alert = Alert.objects.select_related("acknowledged_by", "closed_by").get(pk=alert_id)
    return {**alert_as_dict(alert), "history": history}


def _act(request, alert_id: int, action: str, reason: str = ""):
    user = request.auth if getattr(request.auth, "is_staff", False) else None
    if not Alert.objects.filter(pk=alert_id).exists():
        raise Http404(f"no alert {alert_id}")
    try:
        alert = alert_transition(
            alert_id=alert_id,
            action=action,
            user=user,
            now=timezone.now(),
            reason=reason,
            api_key=key_label(request.auth),
        )
    except TransitionNotAllowed as exc:
        raise HttpError(409, str(exc)) from None
    except ValueError as exc:
        raise FieldHttpError(
            400, "invalid dismissal reason", [{"field": "reason", "message": str(exc)}]
        ) from None
    return alert_as_dict(alert)


@router.post("/{alert_id}/acknowledge", openapi_extra=CONFLICT, summary="Acknowledge an open alert")
def acknowledge(request, alert_id: int):
    return _act(request, alert_id, "acknowledge")


@router.post("/{alert_id}/resolve", openapi_extra=CONFLICT, summary="Resolve an open or acknowledged alert")
def resolve(request, alert_id: int):
    return _act(request, alert_id, "resolve")


@router.post("/{alert_id}/dismiss", openapi_extra=CONFLICT, summary="Dismiss an alert, with a reason")
def dismiss(request, alert_id: int, body: DismissIn):
    return _act(request, alert_id, "dismiss", dismiss_text(reason=body.reason.strip(), note=body.note))
