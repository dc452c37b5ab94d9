"""Ingest: validate request bodies into normalised events and hand them to the stream."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from ingest.schemas import FieldError, validate_event
from ingest.streams import EventStream, get_stream
from iops.lib.request_id import request_id_var


class BodyError(Exception):
    """The request body as a whole is unacceptable (400)."""

    def __init__(self, message: str, errors: list[dict[str, str]]):
        super().__init__(message)
        self.message = message
        self.errors = errors


STREAM_ERROR = {"field": "stream", "message": "the stream did not take this event; send it again shortly"}


@dataclass
class IngestOutcome:
    batch: bool
    accepted: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    unpublished: int = 0  # valid events the stream refused (kinesis partial failure): 503 semantics

    @property
    def rejected(self) -> int:
        return sum(1 for r in self.results if r["status"] == "rejected")


def _new_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


def events_validate(body: Any, *, now: datetime) -> IngestOutcome:
    """One event, or {"events": [...]} with 1–500 items validated independently."""
    if isinstance(body, dict) and "events" in body and "event_type" not in body:
        items = body["events"]
        if not isinstance(items, list):
            raise BodyError("invalid batch", [{"field": "events", "message": "must be a list of events"}])
        if not 1 <= len(items) <= settings.INGEST_MAX_BATCH:
            raise BodyError(
                "invalid batch",
                [
                    {
                        "field": "events",
                        "message": f"must hold 1 to {settings.INGEST_MAX_BATCH} events, got {len(items)}",
                    }
                ],
            )
        outcome = IngestOutcome(batch=True)
    else:
        items = [body]
        outcome = IngestOutcome(batch=False)
    rid = request_id_var.get()  # carried to the worker's log lines (issue 9)
    for index, item in enumerate(items):
        try:
            event = validate_event(item, now=now, new_id=_new_id)
        except FieldError as exc:
            outcome.results.append({"index": index, "status": "rejected", "errors": exc.errors})
            continue
        if rid != "-":
            event["request_id"] = rid
        outcome.accepted.append(event)
        outcome.results.append({"index": index, "status": "accepted", "event_id": event["event_id"]})
    return outcome


def events_publish(*, outcome: IngestOutcome, stream: EventStream | None = None) -> IngestOutcome:
    """Publish the accepted events; those the stream refuses become `rejected` with a `stream` error.

    Raises StreamUnavailable when the backend cannot be reached at all (nothing was published).
    """
    if not outcome.accepted:
        return outcome
    failed = set((stream or get_stream()).publish(outcome.accepted))
    if failed:
        outcome.accepted = [e for i, e in enumerate(outcome.accepted) if i not in failed]
        position = 0  # the n-th accepted result is accepted[n] as published
        for n, result in enumerate(outcome.results):
            if result["status"] != "accepted":
                continue
            if position in failed:
                outcome.results[n] = {
                    "index": result["index"],
                    "status": "rejected",
                    "errors": [STREAM_ERROR],
                }
            position += 1
        outcome.unpublished = len(failed)
    return outcome


def events_ingest(*, body: Any, now: datetime, stream: EventStream | None = None) -> IngestOutcome:
    """Validate and publish; raises StreamUnavailable (nothing accepted) or BodyError."""
    return events_publish(outcome=events_validate(body, now=now), stream=stream)
