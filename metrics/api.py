from __future__ import annotations

import base64
from typing import Literal

from django.http import Http404
from ninja import Router
from ninja.errors import HttpError

from metrics.selectors import ORDERABLE, entity_get, entity_list, snapshot_as_dict

router = Router(tags=["entities"])
EntityType = Literal["student", "tutor"]


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return max(0, int(base64.urlsafe_b64decode(cursor.encode()).decode()))
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "invalid cursor") from None


@router.get("/{entity_type}", summary="List students or tutors")
def list_entities(
    request, entity_type: EntityType, order: str | None = None, limit: int = 50, cursor: str | None = None
):
    order = order or ORDERABLE[entity_type][0]
    if order not in ORDERABLE[entity_type]:
        raise HttpError(400, f"order must be one of {', '.join(ORDERABLE[entity_type])}")
    limit = max(1, min(limit, 500))
    offset = _decode_cursor(cursor)
    rows, more = entity_list(entity_type, order=order, offset=offset, limit=limit)
    next_cursor = base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if more else None
    return {"results": [snapshot_as_dict(entity_type, r) for r in rows], "next": next_cursor}


@router.get("/{entity_type}/{entity_id}", summary="One student's or tutor's snapshot")
def get_entity(request, entity_type: EntityType, entity_id: str):
    obj = entity_get(entity_type, entity_id)
    if obj is None:
        raise Http404(f"no {entity_type} {entity_id}")
    return snapshot_as_dict(entity_type, obj)
