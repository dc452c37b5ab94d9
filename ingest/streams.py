"""EventStream: one interface, backends `database` (embedded default), `redis` and `kinesis`.

Contract for every backend: `publish` returns only when the events are durable in the stream, with
the indices of the events it could not make durable (empty when all are; only kinesis reports
per-record failures), or raises StreamUnavailable when nothing was published; `read` hands out deliveries that stay pending until `ack`; a delivery
that is never acked comes back after STREAM_CLAIM_IDLE_MS; `dead_letter` parks a message for good.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DataError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from iops.lib.text import printable

logger = logging.getLogger(__name__)


class StreamUnavailable(Exception):
    """The stream backend cannot be reached; callers answer 503 / retry later."""


class StreamNotDurable(Exception):
    """The stream would lose accepted events on a restart (Redis without its append-only file)."""


@dataclass
class Delivery:
    token: str
    event: dict[str, Any] | None  # None when the stored message is not a valid event body
    raw: str
    deliveries: int = 1
    error: str = ""


def decode(token: str, raw: str | bytes, deliveries: int = 1) -> Delivery:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        event = json.loads(text)
        if (
            not isinstance(event, dict)
            or not {"event_id", "event_type", "payload", "timestamp"} <= event.keys()
        ):
            raise ValueError("missing envelope keys")
    except ValueError as exc:
        return Delivery(
            token=token, event=None, raw=text[:10_000], deliveries=deliveries, error=f"malformed: {exc}"
        )
    return Delivery(token=token, event=event, raw=text, deliveries=deliveries)


def dead_letter_record(*, backend: str, delivery: Delivery, error: str) -> None:
    """Write the StreamDeadLetter row of a message; callers ack the message only after this returns.

    Raises when the row cannot be written (database down): the message then stays pending and comes back.
    A body the database refuses as JSON (a message that never passed today's validation: a lone
    surrogate, an escaped NUL) is kept as text in `raw` instead, so no dead letter is left without a row.
    Idempotent per message: a worker that died between this and its ack does not write a second row."""
    from ingest.models import StreamDeadLetter

    message_id = delivery.token[:100]
    if StreamDeadLetter.objects.filter(backend=backend, message_id=message_id).exists():
        return
    fields = {
        "backend": backend,
        "message_id": message_id,
        "error": printable(error[:5000]),
        "deliveries": delivery.deliveries,
    }
    try:
        with transaction.atomic():
            StreamDeadLetter.objects.create(
                body=delivery.event, raw=delivery.raw if delivery.event is None else "", **fields
            )
    except (DataError, ValueError) as exc:  # ValueError: the driver refuses the text before sending it
        logger.warning(
            "dead letter body kept as text", extra={"message_id": message_id, "error": str(exc)[:200]}
        )
        StreamDeadLetter.objects.create(body=None, raw=printable(delivery.raw), **fields)


class EventStream(ABC):
    name: str

    @abstractmethod
    def publish(self, events: list[dict[str, Any]]) -> list[int]:
        """Make the events durable; returns the indices of those that are not (the caller rejects them)."""

    @abstractmethod
    def read(self, *, consumer: str, count: int, block_ms: int) -> list[Delivery]: ...

    @abstractmethod
    def ack(self, deliveries: list[Delivery]) -> None: ...

    @abstractmethod
    def dead_letter(self, delivery: Delivery, error: str) -> None: ...

    @abstractmethod
    def backlog(self) -> dict[str, int]: ...

    @abstractmethod
    def ping(self) -> None: ...

    def durability_problem(self) -> str | None:
        """Why an accepted, unprocessed event would not survive a restart of the stream, or None."""
        return None


# --- database ---------------------------------------------------------------------------------

_wakeup = threading.Event()  # lets an in-process worker pick up a publish at once instead of polling


class DatabaseStream(EventStream):
    name = "database"

    def publish(self, events: list[dict[str, Any]]) -> list[int]:
        from ingest.models import PendingEvent

        try:
            PendingEvent.objects.bulk_create([PendingEvent(body=e) for e in events], batch_size=500)
        except (OperationalError, InterfaceError) as exc:  # database down or locked: 503, not 500
            raise StreamUnavailable(f"database: {exc.__class__.__name__}") from exc
        _wakeup.set()
        return []

    def _claim(self, consumer: str, count: int) -> list[Delivery]:
        from ingest.models import PendingEvent

        now = timezone.now()
        with transaction.atomic():
            qs = PendingEvent.objects.filter(
                Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
            ).order_by("id")
            if connection.vendor == "postgresql":
                qs = qs.select_for_update(skip_locked=True)
            rows = list(qs.values_list("id", "body", "deliveries")[:count])
            if not rows:
                return []
            ids = [r[0] for r in rows]
            PendingEvent.objects.filter(id__in=ids).update(
                claimed_until=now + timedelta(milliseconds=settings.STREAM_CLAIM_IDLE_MS),
                claimed_by=consumer[:100],
                deliveries=F("deliveries") + 1,
            )
        return [decode(str(pk), json.dumps(body), deliveries + 1) for pk, body, deliveries in rows]

    def read(self, *, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        got = self._claim(consumer, count)
        if not got and block_ms > 0:
            _wakeup.wait(block_ms / 1000)
            _wakeup.clear()
            got = self._claim(consumer, count)
        return got

    def ack(self, deliveries: list[Delivery]) -> None:
        from ingest.models import PendingEvent

        PendingEvent.objects.filter(id__in=[int(d.token) for d in deliveries]).delete()

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        from ingest.models import PendingEvent

        with transaction.atomic():
            dead_letter_record(backend=self.name, delivery=delivery, error=error)
            PendingEvent.objects.filter(id=int(delivery.token)).delete()

    def backlog(self) -> dict[str, int]:
        from ingest.models import PendingEvent

        now = timezone.now()
        pending = PendingEvent.objects.filter(claimed_until__gte=now).count()
        total = PendingEvent.objects.count()
        return {"waiting": total - pending, "in_flight": pending}

    def ping(self) -> None:
        return None  # lives in the database; the database check covers it


# --- redis ------------------------------------------------------------------------------------


XADD_ALL = """
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
end
return #ARGV
"""


class RedisStream(EventStream):
    name = "redis"

    def __init__(self, url: str, key: str, group: str):
        import redis

        self._redis_mod = redis
        self.client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        self.key = key
        self.dead_key = f"{key}:dead"
        self.group = group
        self._group_ready = False
        self._xadd_all = self.client.register_script(XADD_ALL)

    def _errors(self):
        return (self._redis_mod.ConnectionError, self._redis_mod.TimeoutError)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # id 0: entries published before the first worker started are still consumed.
            self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except self._redis_mod.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def publish(self, events: list[dict[str, Any]]) -> list[int]:
        # One round trip and one command for the whole batch (a script running XADD per event): all
        # entries are added or none, and the client packs one command instead of hundreds.
        try:
            self._xadd_all(keys=[self.key], args=[json.dumps(e, separators=(",", ":")) for e in events])
        except (*self._errors(), self._redis_mod.ResponseError) as exc:  # ResponseError: e.g. out of memory
            raise StreamUnavailable(f"redis: {exc.__class__.__name__}") from exc
        return []

    def read(self, *, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        try:
            self._ensure_group()
            deliveries = self._reclaim(consumer, count)
            if len(deliveries) < count:
                resp = self.client.xreadgroup(
                    self.group,
                    consumer,
                    {self.key: ">"},
                    count=count - len(deliveries),
                    block=block_ms or None,
                )
                read: list[tuple[Any, list[tuple[Any, dict]]]] = resp or []  # type: ignore[assignment]
                for _key, entries in read:
                    for msg_id, fields in entries:
                        deliveries.append(self._decode(msg_id, fields, 1))
            return deliveries
        except self._redis_mod.ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted (e.g. Redis restarted empty)
                self._group_ready = False
                return []
            raise
        except self._errors() as exc:
            self._group_ready = False
            raise StreamUnavailable(f"redis: {exc.__class__.__name__}") from exc

    def _decode(self, msg_id: bytes | str, fields: dict, deliveries: int) -> Delivery:
        token = msg_id.decode() if isinstance(msg_id, bytes) else msg_id
        raw = fields.get(b"e") if fields else None
        if raw is None:
            return Delivery(
                token=token,
                event=None,
                raw=repr(fields)[:10_000],
                deliveries=deliveries,
                error="malformed: no 'e' field",
            )
        return decode(token, raw, deliveries)

    def _reclaim(self, consumer: str, count: int) -> list[Delivery]:
        """Take over entries another consumer left pending longer than the idle timeout (it died)."""
        resp = self.client.xautoclaim(
            self.key,
            self.group,
            consumer,
            min_idle_time=settings.STREAM_CLAIM_IDLE_MS,
            start_id="0-0",
            count=count,
        )
        entries = [(mid, f) for mid, f in resp[1] if f is not None]
        if not entries:
            return []
        counts: dict[Any, int] = {}
        for item in self.client.xpending_range(
            self.key, self.group, min=entries[0][0], max=entries[-1][0], count=len(entries) * 2
        ):
            counts[item["message_id"]] = int(item["times_delivered"])
        return [self._decode(mid, fields, counts.get(mid, 2)) for mid, fields in entries]

    def ack(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        ids = [d.token for d in deliveries]
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.xack(self.key, self.group, *ids)
            pipe.xdel(self.key, *ids)
            pipe.execute()
        except self._errors() as exc:
            raise StreamUnavailable(f"redis: {exc.__class__.__name__}") from exc

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        # The row first: a message is acked only once its dead letter is in the database (issue 21).
        dead_letter_record(backend=self.name, delivery=delivery, error=error)
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.xadd(
                self.dead_key,
                {
                    "id": delivery.token,
                    "raw": delivery.raw.encode("utf-8", "backslashreplace"),
                    "error": error[:5000].encode("utf-8", "backslashreplace"),
                    "deliveries": delivery.deliveries,
                },
            )
            pipe.xack(self.key, self.group, delivery.token)
            pipe.xdel(self.key, delivery.token)
            pipe.execute()
        except self._errors() as exc:
            raise StreamUnavailable(f"redis: {exc.__class__.__name__}") from exc

    def backlog(self) -> dict[str, int]:
        try:
            self._ensure_group()
            groups = {
                g["name"].decode() if isinstance(g["name"], bytes) else g["name"]: g
                for g in self.client.xinfo_groups(self.key)
            }
            info = groups.get(self.group, {})
            return {"waiting": int(info.get("lag") or 0), "in_flight": int(info.get("pending") or 0)}
        except self._errors() as exc:
            raise StreamUnavailable(f"redis: {exc.__class__.__name__}") from exc

    def ping(self) -> None:
        try:
            self.client.ping()
        except self._errors() as exc:
            raise StreamUnavailable(f"redis: {exc.__class__.__name__}") from exc

    def persistence(self) -> dict[str, str]:
        """The server's persistence: `aof_enabled` from INFO (answered where CONFIG is disabled, as on
        managed Redis) and `appendfsync` from CONFIG GET when allowed ("unknown" otherwise)."""
        try:
            info = self.client.info("persistence")
            try:
                fsync = self.client.config_get("appendfsync").get("appendfsync", "unknown")
            except self._redis_mod.ResponseError:
                fsync = "unknown"
        except self._errors() as exc:
            raise StreamUnavailable(f"redis: {exc.__class__.__name__}") from exc
        return {"aof_enabled": str(info.get("aof_enabled", 0)), "appendfsync": str(fsync)}

    def durability_problem(self) -> str | None:
        if self.persistence()["aof_enabled"] == "1":
            return None
        return "redis persistence off (appendonly no): accepted events are lost on a restart"


def stream_require_durable() -> None:
    """At the start of a role that accepts or consumes events: refuse to run on a stream that would lose
    what it accepted (REDIS_REQUIRE_AOF, on in production). A stream that cannot be reached at start does
    not stop the role (ingest answers 503 until it is back); /healthz then reports it."""
    if not settings.REDIS_REQUIRE_AOF:
        return
    try:
        problem = get_stream().durability_problem()
    except StreamUnavailable as exc:
        logger.warning("stream durability not checked at start: unreachable", extra={"error": str(exc)[:200]})
        return
    if problem:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"{problem}. Run Redis with --appendonly yes (docs/operations.md: Production roles), "
            "or set REDIS_REQUIRE_AOF=false to accept that loss"
        )


@cache
def get_stream() -> EventStream:
    if settings.IOPS_STREAM == "redis":
        if not settings.REDIS_URL:
            raise ImproperlyConfigured("IOPS_STREAM=redis needs REDIS_URL")
        return RedisStream(settings.REDIS_URL, settings.IOPS_STREAM_KEY, settings.IOPS_STREAM_GROUP)
    if settings.IOPS_STREAM == "kinesis":
        from ingest.kinesis import KinesisStream

        if not settings.KINESIS_STREAM_NAME:
            raise ImproperlyConfigured("IOPS_STREAM=kinesis needs KINESIS_STREAM_NAME")
        return KinesisStream(settings.KINESIS_STREAM_NAME)
    return DatabaseStream()
