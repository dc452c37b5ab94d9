"""What an alert notification says, the same for every channel: a JSON-ready dict plus text renderings."""

from __future__ import annotations

import unicodedata
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from django.conf import settings

from alerts.models import ENTITY_PLURALS, SEVERITY_RANK

# An insight scored for the entity this recently is attached when none is linked to the alert itself.
INSIGHT_MAX_AGE = timedelta(days=1)


def entity_url(entity_type: str, entity_id: str) -> str:
    """The dashboard's entity page (ids such as "Computer Science|west" are URL-quoted)."""
    return f"{settings.PUBLIC_BASE_URL}/entities/{quote(entity_type, safe='')}/{quote(entity_id, safe='')}"


def _insight_for(alert, now: datetime) -> dict[str, Any] | None:
    from insights.models import Insight

    insight = None
    if alert.pk is not None:
        insight = Insight.objects.filter(alert_id=alert.pk).order_by("-scored_at").first()
    if insight is None:
        insight = (
            Insight.objects.filter(
                entity_type=alert.entity_type,
                entity_id=alert.entity_id,
                scored_at__gte=now - INSIGHT_MAX_AGE,
            )
            .order_by("-scored_at")
            .first()
        )
    if insight is None:
        return None
    return {
        "risk": insight.risk,
        "level": insight.level,
        "explanation": insight.explanation,
        "recommendations": list(insight.recommendations or []),
        "model": insight.model,
        "scored_at": insight.scored_at.isoformat(),
    }


def alert_message(*, alert, now: datetime, trigger: str = "opened") -> dict[str, Any]:
    """The notification for one alert. `trigger` says why it is sent: opened, escalated or test."""
    return {
        "alert_id": alert.pk,
        "trigger": trigger,
        "type": alert.type,
        "severity": alert.severity,
        "status": alert.status,
        "entity": {"type": alert.entity_type, "id": alert.entity_id},
        "summary": alert.message,
        "details": alert.details or {},
        "occurrences": alert.occurrences,
        "first_seen": alert.first_seen.isoformat() if alert.first_seen else None,
        "last_seen": alert.last_seen.isoformat() if alert.last_seen else None,
        "insight": _insight_for(alert, now),
        "url": entity_url(alert.entity_type, alert.entity_id),
    }


def group_message(*, alerts: list, now: datetime, trigger: str = "opened") -> dict[str, Any]:
    """One notification for alerts of one type and severity raised together (as Alertmanager groups):
    the first alert's message, summarised for all of them, each listed with its own link."""
    first = alerts[0]
    message = alert_message(alert=first, now=now, trigger=trigger)
    message.update(
        {
            "summary": f"{len(alerts)} {ENTITY_PLURALS.get(first.entity_type, 'entities')}: {first.get_type_display()}",
            "group": {"size": len(alerts), "type": first.type, "severity": first.severity},
            "alerts": [
                {
                    "alert_id": a.pk,
                    "entity": {"type": a.entity_type, "id": a.entity_id},
                    "summary": a.message,
                    "url": entity_url(a.entity_type, a.entity_id),
                }
                for a in alerts
            ],
            "url": f"{settings.PUBLIC_BASE_URL}/?severity={first.severity}&status=active",
        }
    )
    return message


def alert_url(alert_id: int) -> str:
    """The dashboard's page of one alert."""
    return f"{settings.PUBLIC_BASE_URL}/alerts/{alert_id}"


def digest_message(*, channel, alerts: list, now: datetime) -> dict[str, Any]:
    """One notification for a channel's digest (issue 19): every alert raised in its period, grouped by
    type (most alerts first), each with a link. Carries the keys every notifier reads (type, severity,
    entity, summary, trigger), the highest severity among the alerts as its severity."""
    by_type: dict[str, list] = {}
    for alert in alerts:
        by_type.setdefault(alert.type, []).append(alert)
    severity = max((a.severity for a in alerts), key=lambda s: SEVERITY_RANK[s])
    period = "hour" if channel.digest == "hourly" else "day"
    return {
        "alert_id": None,
        "trigger": "digest",
        "type": "digest",
        "severity": severity,
        "status": "digest",
        "entity": {"type": "digest", "id": channel.name},
        "summary": f"{len(alerts)} alert{'' if len(alerts) == 1 else 's'} raised in the last {period} (digest)",
        "digest": {
            "channel": channel.name,
            "period": channel.digest,
            "since": min(a.first_seen for a in alerts).isoformat(),
            "sent_at": now.isoformat(),
            "size": len(alerts),
        },
        "groups": [
            {
                "type": type_,
                "label": members[0].get_type_display(),
                "count": len(members),
                "alerts": [
                    {
                        "alert_id": a.pk,
                        "severity": a.severity,
                        "entity": {"type": a.entity_type, "id": a.entity_id},
                        "summary": a.message,
                        "first_seen": a.first_seen.isoformat(),
                        "url": alert_url(a.pk),
                    }
                    for a in members
                ],
            }
            for type_, members in sorted(by_type.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
        "url": f"{settings.PUBLIC_BASE_URL}/",
    }


def message_subject(message: dict[str, Any], *, limit: int = 200, ascii_only: bool = False) -> str:
    prefix = "[IOps TEST] " if message.get("trigger") == "test" else "[IOps] "
    escalated = "escalated to " if message.get("trigger") == "escalated" else ""
    subject = " ".join(f"{prefix}{escalated}{message['severity'].upper()}: {message['summary']}".split())
    ellipsis = "…"
    if ascii_only:  # SNS subjects: printable ASCII, no line breaks, under 100 characters
        subject = unicodedata.normalize("NFKD", subject).encode("ascii", "ignore").decode()
        ellipsis = "..."
    return subject if len(subject) <= limit else subject[: limit - len(ellipsis)] + ellipsis


def _digest_text(message: dict[str, Any]) -> str:
    lines = [message["summary"], ""]
    for group in message["groups"]:
        lines.append(f"{group['label']} ({group['count']})")
        lines += [f"- [{a['severity']}] {a['summary']}\n  {a['url']}" for a in group["alerts"]]
        lines.append("")
    lines.append(f"Dashboard: {message['url']}")
    return "\n".join(lines) + "\n"


def message_text(message: dict[str, Any]) -> str:
    if message.get("digest"):
        return _digest_text(message)
    if message.get("group"):
        lines = [message["summary"], "", f"Type: {message['type']}   Severity: {message['severity']}", ""]
        lines += [f"- {a['summary']}\n  {a['url']}" for a in message["alerts"]]
        lines += ["", f"Dashboard: {message['url']}"]
        return "\n".join(lines) + "\n"
    entity = message["entity"]
    lines = [
        message["summary"],
        "",
        f"Type:        {message['type']}",
        f"Severity:    {message['severity']}" + (" (escalated)" if message["trigger"] == "escalated" else ""),
        f"Entity:      {entity['type']} {entity['id']}",
        f"Occurrences: {message['occurrences']} (first {message['first_seen']}, last {message['last_seen']})",
        f"Dashboard:   {message['url']}",
    ]
    if message["details"]:
        lines += ["", "Details:"]
        lines += [f"  {key}: {value}" for key, value in sorted(message["details"].items())]
    insight = message.get("insight")
    if insight:
        lines += [
            "",
            f"Churn insight: {insight['level']} risk ({insight['risk']:.2f}, {insight['model']})",
            f"  {insight['explanation']}",
        ]
        lines += [f"  - {rec}" for rec in insight["recommendations"]]
    return "\n".join(lines) + "\n"
