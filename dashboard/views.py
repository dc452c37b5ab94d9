from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from dashboard.rendering import kpi_context
from dashboard.selectors import RANGES, parse_range, recent_alerts


@staff_member_required(login_url="/accounts/login/")
def index(request: HttpRequest) -> HttpResponse:
    range_key = parse_range(request.GET.get("range"))
    context = {
        **kpi_context(range_key=range_key, now=timezone.now()),
        "alerts": recent_alerts(),
        "range_key": range_key,
        "ranges": list(RANGES),
        "oob": False,
    }
    return render(request, "dashboard/index.html", context)
