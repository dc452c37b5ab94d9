"""Operator feedback: every acknowledge, resolve or dismiss labels its alert (alerts.models.AlertLabel).

Acknowledged or resolved is "acted on"; dismissed is "dismissed" with a reason from a fixed list. The
dismissal's text is `"<reason>"` or `"<reason>: <note>"`, so the alert's `dismiss_reason` and its
transition note stay readable while the reason itself is a code the model-quality page can count.
A free-text reason (what API clients sent before the list existed, and still may: the CONTRACT's
`{"reason": ...}`) is kept as written and counted as `other`."""

from __future__ import annotations

from datetime import datetime

from alerts.models import Alert, AlertLabel, DismissReason, LabelKind

REASONS = tuple(DismissReason.values)


class InvalidReason(ValueError):
    """A dismissal without a reason from the list (answered with 400 naming `reason`)."""

    def __init__(self, given: str):
        shown = f"“{given[:40]}” is not" if given else "a reason is required and must be"
        super().__init__(f"{shown} one of: {', '.join(REASONS)}")


def dismiss_text(*, reason: str, note: str = "") -> str:
    """The stored dismissal text of a reason code and an optional free-text note."""
    note = note.strip()
    return f"{reason}: {note}" if note else reason


def reason_code(text: str) -> str:
    """The reason code at the head of a dismissal text; `other` for free text; InvalidReason when empty."""
    if not text.strip():
        raise InvalidReason("")
    code = text.split(":", 1)[0].strip()
    return code if code in REASONS else DismissReason.OTHER.value


def label_record(
    *, alert: Alert, action: str, reason: str, user, now: datetime, api_key: str = ""
) -> AlertLabel:
    """Call inside the transition's transaction (alerts.services.alert_transition): the latest word wins."""
    dismissed = action == "dismiss"
    label, _ = AlertLabel.objects.update_or_create(
        alert=alert,
        defaults={
            "label": LabelKind.DISMISSED if dismissed else LabelKind.ACTED_ON,
            "action": action,
            "reason": reason_code(reason) if dismissed else "",
            "by": user if getattr(user, "pk", None) else None,
            "by_key": api_key,
            "at": now,
        },
    )
    return label
