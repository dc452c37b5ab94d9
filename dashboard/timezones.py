"""Display time zone (issue 19): DISPLAY_TIME_ZONE for everyone, or the user's own (their profile).
Stored times stay UTC; each request, and each socket's renders, run with the zone activated, so the
templates' dates, the chart labels and "sessions today" follow it, and every time is labelled."""

from __future__ import annotations

import zoneinfo
from contextlib import contextmanager
from functools import lru_cache

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone


@lru_cache(maxsize=1)
def zone_names() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def known_zone(name: str) -> bool:
    return name in zone_names()


def user_zone(user) -> zoneinfo.ZoneInfo:
    """The user's zone, else DISPLAY_TIME_ZONE (anonymous users and embeds get the default)."""
    from dashboard.models import Profile

    name = ""
    if user is not None and getattr(user, "is_authenticated", False):
        name = Profile.objects.filter(user_id=user.pk).values_list("time_zone", flat=True).first() or ""
    return zoneinfo.ZoneInfo(name if name and known_zone(name) else settings.DISPLAY_TIME_ZONE)


@contextmanager
def zone_active(zone: zoneinfo.ZoneInfo):
    with timezone.override(zone):
        yield


class DisplayTimeZoneMiddleware:
    """Activates the request user's display zone (after AuthenticationMiddleware)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest):
        user = getattr(request, "user", None)
        with zone_active(user_zone(user)):
            return self.get_response(request)


@staff_member_required(login_url="/accounts/login/")
def profile(request: HttpRequest) -> HttpResponse:
    """/profile: the user's display time zone (empty: the site's DISPLAY_TIME_ZONE)."""
    from dashboard.models import Profile

    user = request.user
    assert user.is_authenticated  # staff_member_required let it through
    prof, _ = Profile.objects.get_or_create(user=user)
    error = ""
    if request.method == "POST":
        name = request.POST.get("time_zone", "").strip()
        if name and not known_zone(name):
            error = f"Unknown time zone “{name[:64]}”: pick one from the list."
        else:
            prof.time_zone = name
            prof.save(update_fields=["time_zone"])
            return HttpResponseRedirect("/profile?saved=1")
    context = {
        "zones": zone_names(),
        "current": prof.time_zone,
        "default_zone": settings.DISPLAY_TIME_ZONE,
        "error": error,
        "saved": request.GET.get("saved") == "1",
    }
    return render(request, "dashboard/profile.html", context, status=400 if error else 200)
