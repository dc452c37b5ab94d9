"""The `kinesis` stream backend: PutRecords partitioned by entity, a lease-based shard consumer with
per-shard checkpoints in the database (ingest.models.KinesisShard).

Publishing: chunks of at most 500 records; partition key = the event's entity, so one entity's events
land on one shard in order. Records Kinesis refuses (FailedRecordCount) are retried alone, a bounded
number of times with backoff; those still refused are returned to the caller, which rejects them
with 503 semantics.

Consuming: every shard has a KinesisShard row. A consumer owns a shard while its lease is valid
(claimed and renewed with a conditional UPDATE; a lease not renewed for KINESIS_LEASE_SECONDS is free
for the taking). `read` returns records from the owned shards; `ack` advances the shard's checkpoint
to the last record of an unbroken acked prefix, only after the caller's batch committed; anything
read but not acked is read again from the checkpoint. A child shard (after resharding) is read only
once its parent is finished, so an entity's events stay in order. Shards are balanced: each consumer
holds at most its fair share (readable shards ÷ kinesis workers with a fresh heartbeat, rounded up)
and releases any surplus between batches, so a worker that joins gets shards within a read or two.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from ingest.schemas import partition_key
from ingest.streams import Delivery, EventStream, StreamUnavailable, dead_letter_record, decode

logger = logging.getLogger(__name__)

MAX_RECORDS_PER_PUT = 500
SHARD_END = "SHARD_END"
SHARD_LIST_TTL = 30.0  # seconds between ListShards calls while consuming
RETRYABLE_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "LimitExceededException",
    "InternalFailure",
    "ServiceUnavailable",
}


@dataclass
class _ShardState:
    """What this process knows about a shard it owns."""

    owner: str
    lease_until: float  # monotonic; renewed when less than half is left
    checkpoint: str
    reads: int = 0  # reads started at the checkpoint since it last moved (KinesisShard.reads_from_checkpoint)
    iterator: str | None = None
    outstanding: list[str] = field(default_factory=list)  # sequence numbers read, in order, not settled
    settled: set[str] = field(default_factory=set)
    finished: bool = False


class KinesisStream(EventStream):
    name = "kinesis"

    def __init__(self, stream_name: str, *, client: Any = None):
        self.stream_name = stream_name
        self.client = client or self._make_client()
        self._lock = threading.RLock()
        self._shards: dict[str, _ShardState] = {}
        self._shard_list: list[dict[str, Any]] = []
        self._shard_list_at = 0.0
        self._attempts: dict[str, int] = {}  # token -> deliveries seen by this process
        self._behind_ms = 0

    @staticmethod
    def _make_client():
        import boto3
        from botocore.config import Config

        # One retry layer: ours (publish) and the worker's loop (consume); botocore does not retry.
        config = Config(
            region_name=settings.AWS_REGION,
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=2,
            read_timeout=5,
        )
        return boto3.client("kinesis", endpoint_url=settings.AWS_ENDPOINT_URL or None, config=config)

    @staticmethod
    def _unavailable(exc: Exception) -> StreamUnavailable:
        response = getattr(exc, "response", None) or {}  # ClientError carries the AWS error code
        code = response.get("Error", {}).get("Code", "")
        return StreamUnavailable(f"kinesis: {code or exc.__class__.__name__}")

    @staticmethod
    def _errors():
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, events: list[dict[str, Any]]) -> list[int]:
        failed: list[int] = []
        for start in range(0, len(events), MAX_RECORDS_PER_PUT):
            chunk = list(range(start, min(start + MAX_RECORDS_PER_PUT, len(events))))
            failed.extend(self._put_chunk(events, chunk))
        return failed

    def _put_chunk(self, events: list[dict[str, Any]], pending: list[int]) -> list[int]:
        """PutRecords for events[pending]; retries only what failed; returns what never made it."""
        from botocore.exceptions import ClientError

        records = {
            i: {
                "Data": json.dumps(events[i], separators=(",", ":")).encode(),
                "PartitionKey": partition_key(events[i])[:256],
            }
            for i in pending
        }
        attempts = settings.KINESIS_PUT_ATTEMPTS
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(0.05 * 2 ** (attempt - 1), 0.5))
            try:
                resp = self.client.put_records(
                    StreamName=self.stream_name, Records=[records[i] for i in pending]
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in RETRYABLE_CODES and attempt + 1 < attempts:
                    continue
                raise self._unavailable(exc) from exc
            except self._errors() as exc:
                raise self._unavailable(exc) from exc
            if not resp.get("FailedRecordCount"):
                return []
            pending = [i for i, r in zip(pending, resp["Records"], strict=True) if r.get("ErrorCode")]
            codes = sorted({r["ErrorCode"] for r in resp["Records"] if r.get("ErrorCode")})
            logger.warning(
                "kinesis refused records",
                extra={"failed": len(pending), "attempt": attempt + 1, "codes": ",".join(codes)},
            )
        return pending

    # --- consuming ----------------------------------------------------------------------------

    def _list_shards(self) -> list[dict[str, Any]]:
        if self._shard_list and time.monotonic() - self._shard_list_at < SHARD_LIST_TTL:
            return self._shard_list
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            resp = self.client.list_shards(**kwargs)
            shards.extend(resp["Shards"])
            token = resp.get("NextToken")
            if not token:
                break
            kwargs = {"NextToken": token}
        self._shard_list, self._shard_list_at = shards, time.monotonic()
        return shards

    def _claim(self, consumer: str) -> list[str]:
        """Create rows for new shards, renew our leases, release any beyond our fair share and take free
        or expired ones up to it; returns owned ids."""
        from ingest.models import KinesisShard

        shards = self._list_shards()
        ids = [s["ShardId"] for s in shards]
        rows = {
            r.shard_id: r for r in KinesisShard.objects.filter(stream_name=self.stream_name, shard_id__in=ids)
        }
        missing = [i for i in ids if i not in rows]
        if missing:
            KinesisShard.objects.bulk_create(
                [KinesisShard(stream_name=self.stream_name, shard_id=i) for i in missing],
                ignore_conflicts=True,
            )
            rows = {
                r.shard_id: r
                for r in KinesisShard.objects.filter(stream_name=self.stream_name, shard_id__in=ids)
            }
        finished = {i for i, r in rows.items() if r.checkpoint == SHARD_END}
        lease = settings.KINESIS_LEASE_SECONDS
        now = timezone.now()
        readable = [
            shard
            for shard in shards
            if shard["ShardId"] not in finished
            # the parents' records come first (split: one parent; merge: two)
            and not any(
                p and p in rows and p not in finished
                for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
            )
        ]
        for shard_id in set(self._shards) - {s["ShardId"] for s in readable}:
            self._shards.pop(shard_id, None)
        share = self._fair_share(consumer, len(readable), now)
        self._release_surplus(consumer, share)
        held = {i for i, st in self._shards.items() if st.owner == consumer}
        owned = []
        for shard in readable:
            shard_id = shard["ShardId"]
            state = self._shards.get(shard_id)
            if shard_id not in held and len(held) >= share:
                continue  # our fair share is full: leave the rest to the other consumers
            if (
                state is not None
                and state.owner == consumer
                and state.lease_until - time.monotonic() > lease / 2
            ):
                owned.append(shard_id)
                continue
            free = Q(lease_owner=consumer) | Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)
            took = KinesisShard.objects.filter(free, stream_name=self.stream_name, shard_id=shard_id).update(
                lease_owner=consumer[:200], lease_expires_at=now + timedelta(seconds=lease)
            )
            if not took:
                self._shards.pop(shard_id, None)  # someone else holds it
                held.discard(shard_id)
                continue
            if state is None or state.owner != consumer:
                checkpoint, reads = KinesisShard.objects.values_list(
                    "checkpoint", "reads_from_checkpoint"
                ).get(stream_name=self.stream_name, shard_id=shard_id)
                state = _ShardState(owner=consumer, lease_until=0, checkpoint=checkpoint, reads=reads)
                self._shards[shard_id] = state
                logger.info("kinesis shard lease taken", extra={"shard": shard_id, "consumer": consumer})
            state.lease_until = time.monotonic() + lease
            held.add(shard_id)
            owned.append(shard_id)
        return owned

    def _fair_share(self, consumer: str, shards: int, now) -> int:
        """Shards per live consumer, rounded up: the consumers are the kinesis stream workers with a
        fresh heartbeat (WorkerHeartbeat), this one included. A lone worker takes every shard; a new
        one gets its share as the others release their surplus."""
        from ingest.models import WorkerHeartbeat

        fresh = now - timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS)
        live = set(
            WorkerHeartbeat.objects.filter(backend=self.name, last_seen__gte=fresh).values_list(
                "name", flat=True
            )
        )
        live.add(consumer[:200])
        return max(1, -(-shards // len(live)))

    def _release_surplus(self, consumer: str, share: int) -> None:
        """Give up leases beyond the fair share, only on shards with nothing read and unsettled (their
        checkpoints are current), so another consumer can take them at once."""
        from ingest.models import KinesisShard

        mine = [i for i, st in self._shards.items() if st.owner == consumer]
        surplus = len(mine) - share
        for shard_id in sorted(mine, reverse=True):
            if surplus <= 0:
                break
            if self._shards[shard_id].outstanding:
                continue
            KinesisShard.objects.filter(
                stream_name=self.stream_name, shard_id=shard_id, lease_owner=consumer[:200]
            ).update(lease_owner="", lease_expires_at=None)
            self._shards.pop(shard_id)
            surplus -= 1
            logger.info("kinesis shard lease released", extra={"shard": shard_id, "consumer": consumer})

    def _iterator(self, shard_id: str, state: _ShardState) -> str:
        if state.iterator is None:
            if state.checkpoint:
                resp = self.client.get_shard_iterator(
                    StreamName=self.stream_name,
                    ShardId=shard_id,
                    ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                    StartingSequenceNumber=state.checkpoint,
                )
            else:
                resp = self.client.get_shard_iterator(
                    StreamName=self.stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )
            state.iterator = resp["ShardIterator"]
        return state.iterator

    def read(self, *, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        try:
            with self._lock:
                got = self._read(consumer, count)
        except self._errors() as exc:
            raise self._unavailable(exc) from exc
        if not got and block_ms > 0:
            time.sleep(min(block_ms, 1000) / 1000)  # GetRecords has no blocking form (5 calls/s/shard)
        return got

    def _read(self, consumer: str, count: int) -> list[Delivery]:
        from botocore.exceptions import ClientError

        deliveries: list[Delivery] = []
        for shard_id in self._claim(consumer):
            if len(deliveries) >= count:
                break
            state = self._shards[shard_id]
            if state.outstanding:  # read before and never settled: go again from the checkpoint
                state.iterator, state.outstanding, state.settled = None, [], set()
            from_checkpoint = state.iterator is None
            try:
                resp = self.client.get_records(
                    ShardIterator=self._iterator(shard_id, state), Limit=count - len(deliveries)
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "ExpiredIteratorException":
                    state.iterator = None
                    continue
                raise
            self._behind_ms = int(resp.get("MillisBehindLatest") or 0)
            state.iterator = resp.get("NextShardIterator")
            if resp["Records"] and from_checkpoint and not self._count_read(shard_id, state):
                continue  # lease lost meanwhile: the new owner reads them from the checkpoint
            for record in resp["Records"]:
                seq = record["SequenceNumber"]
                token = f"{shard_id}/{seq}"
                if len(self._attempts) > 100_000:  # only a redelivery counter: bounded, best effort
                    self._attempts.clear()
                seen = self._attempts.get(token, 0) + 1
                self._attempts[token] = seen
                if from_checkpoint:  # what earlier processes delivered counts too
                    seen = max(seen, state.reads)
                state.outstanding.append(seq)
                deliveries.append(decode(token, record["Data"], seen))
            if state.iterator is None and not state.outstanding:
                self._finish(shard_id, state)
        return deliveries

    def _count_read(self, shard_id: str, state: _ShardState) -> bool:
        """Record a read that starts at the checkpoint and returned records (after a restart, a
        takeover or a failed batch) before they are handed out, so the count survives the process;
        False when the lease is gone. Reads continuing from the previous one write nothing (the hot
        path), and neither do empty reads (an idle shard's restarts count no delivery)."""
        from ingest.models import KinesisShard

        state.reads += 1
        kept = KinesisShard.objects.filter(
            stream_name=self.stream_name, shard_id=shard_id, lease_owner=state.owner
        ).update(reads_from_checkpoint=state.reads)
        if not kept:
            self._shards.pop(shard_id, None)
        return bool(kept)

    def _finish(self, shard_id: str, state: _ShardState) -> None:
        """A closed shard read to its end: mark it so its children may start."""
        self._save_checkpoint(shard_id, state, SHARD_END)
        self._shard_list_at = 0.0
        logger.info("kinesis shard finished", extra={"shard": shard_id})

    def _save_checkpoint(self, shard_id: str, state: _ShardState, checkpoint: str, reads: int = 0) -> None:
        """Move the checkpoint (renewing the lease); `reads`: how often the record now after it has
        been delivered already (it was read in the same pass as the ones settled)."""
        from ingest.models import KinesisShard

        now = timezone.now()
        kept = KinesisShard.objects.filter(
            stream_name=self.stream_name, shard_id=shard_id, lease_owner=state.owner
        ).update(
            checkpoint=checkpoint,
            reads_from_checkpoint=reads,
            lease_expires_at=now + timedelta(seconds=settings.KINESIS_LEASE_SECONDS),
        )
        if not kept:
            logger.warning("kinesis shard lease lost", extra={"shard": shard_id, "consumer": state.owner})
            self._shards.pop(shard_id, None)
            return
        state.checkpoint, state.reads = checkpoint, reads
        state.lease_until = time.monotonic() + settings.KINESIS_LEASE_SECONDS

    def _settle(self, deliveries: list[Delivery]) -> None:
        by_shard: dict[str, list[str]] = {}
        for d in deliveries:
            shard_id, _, seq = d.token.partition("/")
            by_shard.setdefault(shard_id, []).append(seq)
            self._attempts.pop(d.token, None)
        for shard_id, seqs in by_shard.items():
            state = self._shards.get(shard_id)
            if state is None:
                continue  # lease lost meanwhile: the new owner reads from the stored checkpoint
            state.settled.update(seqs)
            last = None
            while state.outstanding and state.outstanding[0] in state.settled:
                last = state.outstanding.pop(0)
                state.settled.discard(last)
            if last is not None:
                blocked = state.outstanding[0] if state.outstanding else None  # read, not settled yet
                reads = self._attempts.get(f"{shard_id}/{blocked}", 0) if blocked else 0
                self._save_checkpoint(shard_id, state, last, reads)
            if state.iterator is None and not state.outstanding and shard_id in self._shards:
                self._finish(shard_id, state)

    def ack(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            with self._lock:
                self._settle(deliveries)

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        dead_letter_record(backend=self.name, delivery=delivery, error=error)
        with self._lock:
            self._settle([delivery])

    def backlog(self) -> dict[str, int]:
        with self._lock:
            return {
                "in_flight": sum(len(s.outstanding) for s in self._shards.values()),
                "owned_shards": len(self._shards),
                "millis_behind_latest": self._behind_ms,
            }

    def ping(self) -> None:
        try:
            self.client.describe_stream_summary(StreamName=self.stream_name)
        except self._errors() as exc:
            raise self._unavailable(exc) from exc
