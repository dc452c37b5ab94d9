"""The conventional Django way to take events, for bench/ingest.py to compare against:

- POST /bench/baseline-ingest: a plain view; JSON body (one event or {"events": [...]}), API key looked
  up in the database, each event validated with a Django form, one ORM row saved per event.
- POST /bench/django-ingest: the product's own ingest view (ingest.views.ingest) reached through
  Django's full request path instead of the lean ASGI route, to show what the route saves.
"""

from __future__ import annotations

import json

from django import forms
from django.db import IntegrityError, transaction
from django.http import JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from ingest.keys import api_key_authenticate, key_from_headers
from ingest.models import Event
from ingest.schemas import EVENT_TYPES
from ingest.views import ingest
from iops.urls import urlpatterns as product_urlpatterns

REQUIRED = {
    "session_started": ("session_id", "student_id", "tutor_id"),
    "session_completed": ("session_id", "student_id", "tutor_id"),
    "ib_call_logged": ("student_id",),
    "tutor_availability_updated": ("tutor_id",),
    "customer_health_update": ("student_id",),
    "supply_demand_update": ("subject", "region"),
}


class EventForm(forms.Form):
    event_type = forms.ChoiceField(choices=[(t, t) for t in EVENT_TYPES])
    event_id = forms.RegexField(regex=r"^[A-Za-z0-9_.:-]{1,64}$", required=False)
    timestamp = forms.DateTimeField(required=False)
    session_id = forms.CharField(max_length=64, required=False)
    student_id = forms.CharField(max_length=64, required=False)
    tutor_id = forms.CharField(max_length=64, required=False)
    subject = forms.CharField(max_length=100, required=False)
    region = forms.CharField(max_length=100, required=False)
    session_type = forms.ChoiceField(
        choices=[("", ""), ("one_on_one", "1:1"), ("group", "group"), ("instant_book", "instant")],
        required=False,
    )
    scheduled_duration_minutes = forms.IntegerField(min_value=5, max_value=480, required=False)
    actual_duration_minutes = forms.IntegerField(min_value=0, max_value=480, required=False)
    duration_minutes = forms.IntegerField(min_value=0, max_value=480, required=False)
    student_rating = forms.IntegerField(min_value=1, max_value=5, required=False)
    rating = forms.IntegerField(min_value=1, max_value=5, required=False)
    tutor_rating = forms.IntegerField(min_value=1, max_value=5, required=False)
    reason = forms.CharField(max_length=40, required=False)
    duration_seconds = forms.IntegerField(min_value=0, max_value=86_400, required=False)
    priority = forms.ChoiceField(
        choices=[("", ""), ("low", "low"), ("medium", "medium"), ("high", "high")], required=False
    )
    health_score = forms.FloatField(min_value=0, max_value=100, required=False)

    def clean(self):
        data = super().clean()
        for name in REQUIRED.get(data.get("event_type"), ()):
            if not data.get(name):
                self.add_error(name, "This field is required.")
        return data


@csrf_exempt
def baseline_ingest(request):
    if request.method != "POST":
        return JsonResponse({"error": "method not allowed"}, status=405)
    plaintext = key_from_headers(request.headers)
    if not plaintext or api_key_authenticate(plaintext) is None:
        return JsonResponse({"error": "authentication required"}, status=401)
    try:
        body = json.loads(request.body)
    except ValueError:
        return JsonResponse({"error": "invalid JSON"}, status=400)
    items = body["events"] if isinstance(body, dict) and "events" in body else [body]
    now = timezone.now()
    results, accepted = [], 0
    with transaction.atomic():
        for index, item in enumerate(items):
            form = EventForm(item if isinstance(item, dict) else {})
            if not form.is_valid():
                results.append({"index": index, "status": "rejected", "errors": form.errors.get_json_data()})
                continue
            data = form.cleaned_data
            event_id = data["event_id"] or f"base_{index}_{now.timestamp()}"
            try:
                with transaction.atomic():
                    Event.objects.create(
                        event_id=event_id,
                        event_type=data["event_type"],
                        occurred_at=data["timestamp"] or now,
                        received_at=now,
                        processed_at=now,
                        student_id=data["student_id"],
                        tutor_id=data["tutor_id"],
                        payload=item,
                    )
            except IntegrityError:
                pass  # a duplicate event_id: accepted, no further effect
            accepted += 1
            results.append({"index": index, "status": "accepted", "event_id": event_id})
    return JsonResponse({"accepted": accepted, "results": results}, status=202 if accepted else 400)


urlpatterns = [
    path("bench/baseline-ingest", baseline_ingest),
    path("bench/django-ingest", ingest),
    *product_urlpatterns,
]
