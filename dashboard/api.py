from __future__ import annotations

from typing import Literal

from django.utils import timezone
from ninja import Router

from dashboard.selectors import kpis

router = Router(tags=["kpis"])


@router.get("/kpis", summary="Dashboard KPIs over a time range")
def get_kpis(request, range: Literal["1h", "24h", "7d", "30d"] = "24h"):  # noqa: A002 - the public name
    return kpis(range_key=range, now=timezone.now())
