"""Template helpers for the dashboard. Everything returned here is plain text: autoescape applies."""

from __future__ import annotations

from urllib.parse import quote

from django import template

register = template.Library()

ENTITY_LABELS = {
    "student": "Student",
    "tutor": "Tutor",
    "subject_region": "Subject × region",
    "global": "Global",
}


def entity_path(entity_type: str, entity_id: str) -> str:
    """/entities/{entity_type}/{entity_id}: the link alert messages carry (ids percent-encoded)."""
    return f"/entities/{quote(str(entity_type), safe='')}/{quote(str(entity_id), safe='')}"


@register.simple_tag
def entity_url(entity_type: str, entity_id: str) -> str:
    return entity_path(entity_type, entity_id)


@register.filter
def entity_label(entity_type: str) -> str:
    return ENTITY_LABELS.get(entity_type, entity_type)


@register.filter
def pct(value) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


@register.filter
def num(value, digits: int = 1) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:.0f}"
    return str(value)


@register.filter
def bar_width(value, top=100) -> str:
    """A percentage 0–100 for inline bar widths (numbers only, so it is safe in a style attribute)."""
    try:
        return f"{max(0.0, min(100.0, float(value) / float(top) * 100)):.0f}"
    except (TypeError, ValueError, ZeroDivisionError):
        return "0"


@register.filter
def pretty(value) -> str:
    """A details value as one readable line: dicts as "k: v", lists joined, floats rounded."""
    if isinstance(value, dict):
        return (
            ", ".join(
                f"{k.replace('_', ' ') if isinstance(k, str) else k}: {pretty(v)}" for k, v in value.items()
            )
            or "–"
        )
    if isinstance(value, list | tuple):
        return ", ".join(pretty(v) for v in value) or "–"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    if value is None:
        return "–"
    return str(value)


@register.filter
def humanize(value) -> str:
    return str(value).replace("_", " ")


@register.simple_tag
def dismiss_reasons() -> list[tuple[str, str]]:
    """The fixed list a dismissal picks its reason from (alerts.models.DismissReason)."""
    from alerts.models import DismissReason

    return list(DismissReason.choices)
