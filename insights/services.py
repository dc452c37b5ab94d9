"""Scoring an entity into an Insight: local model always, Bedrock when configured, within a cache."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BigIntegerField, Case, Q, Value, When

from alerts.thresholds import health_cuts
from insights import bedrock, local_model
from insights.budget import budget_claim, budget_purge
from insights.features import ENTITY_TYPES, FEATURE_COLUMNS, student_features, tutor_features
from insights.models import Insight
from insights.selectors import BEDROCK_FAILED_PREFIX, BEDROCK_PREFIX
from iops.lib import realtime
from iops.lib.sql import create_objects
from metrics.health import churn_probability
from metrics.models import StudentSnapshot, TutorSnapshot

logger = logging.getLogger(__name__)


def bedrock_enabled() -> bool:
    """Bedrock only with a model id, and never inside the embedded pipeline (eager Celery runs
    tasks inline in the worker thread: a slow model call would stall ingest)."""
    return bool(settings.BEDROCK_MODEL_ID) and not settings.CELERY_TASK_ALWAYS_EAGER


def _publish(*insights: Insight) -> None:
    """Tell open dashboards (after commit), in one change: alert drawers and feed rows show the
    new insights."""
    pks = [insight.pk for insight in insights]
    if pks:
        transaction.on_commit(lambda: realtime.publish_change(realtime.Change(insights=pks)))


# What a reused insight carries over from the one that was scored (its own alert and origin aside).
_REUSED = (
    "entity_type",
    "entity_id",
    "risk",
    "level",
    "explanation",
    "recommendations",
    "drivers",
    "features",
    "model",
    "fallback_reason",
    "scored_at",
)


def _reuse(later: list[tuple[int, Insight, int | None]]) -> dict[int, Insight]:
    """Cached insights (or this batch's) answer these alerts too: [(item index, insight, alert id)], in
    the items' order; the answer of each index. An alert gets a row of its own, so whatever looks an
    alert's insight up by alert_id (API, drawer, notifications) finds it: the insight itself when it has
    no alert yet (claimed by a conditional UPDATE: only while its alert_id is still NULL), else a copy
    (cached_from = the scored original) — the one the alert already has (a redelivered task), else a new
    one. Decided first, then written in a few statements however many items: one UPDATE of the claims,
    one read of the existing copies and of the sources' full rows, one INSERT of the new copies, one push."""
    out: dict[int, Insight] = {}
    claims: dict[int, tuple[Insight, int]] = {}  # pk → (the insight, the alert it is to answer)
    claiming: list[tuple[int, Insight, int]] = []  # answered by a claim, if the UPDATE wins it
    copying: list[tuple[int, Insight, int]] = []
    for i, insight, alert_id in later:
        claim = claims.get(insight.pk)
        current = insight.alert_id if claim is None else claim[1]
        if alert_id is None or (current == alert_id and claim is None):
            out[i] = insight
        elif current == alert_id:
            claiming.append((i, insight, alert_id))
        elif current is None:
            claims[insight.pk] = (insight, alert_id)
            claiming.append((i, insight, alert_id))
        else:
            copying.append((i, insight, alert_id))
    published: list[Insight] = []
    if claims:
        won = set(claims)
        when = [When(pk=pk, then=Value(alert_id)) for pk, (_insight, alert_id) in claims.items()]
        updated = Insight.objects.filter(pk__in=claims, alert_id__isnull=True).update(
            alert_id=Case(*when, output_field=BigIntegerField())
        )
        if updated < len(claims):  # another worker answered some alerts with them meanwhile
            now_held = dict(Insight.objects.filter(pk__in=claims).values_list("pk", "alert_id"))
            won = {pk for pk, (_insight, alert_id) in claims.items() if now_held.get(pk) == alert_id}
        for pk in won:
            insight, alert_id = claims[pk]
            insight.alert_id = alert_id
            published.append(insight)
        for i, insight, alert_id in claiming:
            if insight.pk in won:
                out[i] = insight
            else:  # lost (or held for this alert already: the copy read below finds the row itself)
                copying.append((i, insight, alert_id))
    if copying:
        copying.sort(key=lambda item: item[0])
        pairs = {(insight.cached_from_id or insight.pk, alert_id) for _i, insight, alert_id in copying}
        originals = {original for original, _alert_id in pairs}
        sources = {insight.pk for _i, insight, _alert_id in copying}
        rows = Insight.objects.filter(
            Q(pk__in=originals | sources)
            | Q(cached_from_id__in=originals, alert_id__in={alert_id for _o, alert_id in pairs})
        ).order_by("-scored_at", "pk")
        existing: dict[tuple[int | None, int | None], Insight] = {}
        full: dict[int, Insight] = {}
        for row in rows:
            full[row.pk] = row
            for pair in ((row.pk, row.alert_id), (row.cached_from_id, row.alert_id)):
                if pair in pairs:
                    existing.setdefault(pair, row)
        copies: dict[tuple[int, int], Insight] = {}
        for i, insight, alert_id in copying:
            pair = (insight.cached_from_id or insight.pk, alert_id)
            if pair in existing:  # the alert already has it (a redelivered task)
                out[i] = existing[pair]
                continue
            if pair not in copies:
                source = full.get(insight.pk, insight)
                copies[pair] = Insight(
                    **{name: getattr(source, name) for name in _REUSED},
                    alert_id=alert_id,
                    cached_from_id=pair[0],
                )
            out[i] = copies[pair]
        published += create_objects(model=Insight, objs=list(copies.values()))
    _publish(*published)
    return out


def insight_score(
    *, entity_type: str, entity_id: str, alert_id: int | None = None, now: datetime
) -> Insight | None:
    """Score one student (churn) or tutor (burnout) and store the Insight; None when metrics has no
    snapshot for it. Within the cache window an entity keeps its insight while it says the same
    (local_model.same_story), and it then also answers the alert (_reuse). Bedrock is asked only with
    credentials and a claimed budget slot."""
    scored = insights_score_alerts(items=[(entity_type, entity_id, alert_id)], now=now)
    return scored[0] if scored else None


def _snapshot_source(entity_type: str) -> tuple[Any, str, Callable[[Any], dict[str, float]]]:
    """The snapshot model of an entity type, its id field and its feature function."""
    if entity_type == "student":
        return StudentSnapshot, "student_id", student_features
    return TutorSnapshot, "tutor_id", tutor_features


def _snapshots(entity_type: str, ids: set[str]) -> dict[str, dict[str, Any]]:
    """Feature vectors of many entities of one type, in one read of the columns the features use. A
    student with no health score yet (not enough data) has nothing to explain and is left out."""
    model, key, to_features = _snapshot_source(entity_type)
    found = model.objects.filter(**{f"{key}__in": ids}).values(key, *FEATURE_COLUMNS[entity_type])
    rows = {row[key]: to_features(SimpleNamespace(**row)) for row in found}
    if entity_type == "student":
        return {k: f for k, f in rows.items() if f["health"] is not None}
    return rows


# What is read of an entity's latest insight: what the cache decides on (features_moved, same_story:
# features, risk, level, drivers; _reuse: alert_id, cached_from) and what callers read of the insights
# they get back (insights_score_riskiest: scored_at). The text and the actions are loaded only for the
# insights copied (_reuse).
_DECIDING = (
    "id",
    "entity_type",
    "entity_id",
    "alert_id",
    "cached_from_id",
    "risk",
    "level",
    "drivers",
    "features",
    "scored_at",
)


def _latest_cached(entity_type: str, ids: set[str], *, now: datetime) -> dict[str, Insight]:
    """Each entity's latest insight inside the cache window, in one read (none when the cache is off);
    only its _DECIDING columns (the others are deferred)."""
    minutes = settings.INSIGHTS_CACHE_MINUTES
    if minutes <= 0 or not ids:
        return {}
    since = now - timedelta(minutes=minutes)
    if connection.vendor == "postgresql":
        # One index probe per entity. A plain `entity_id IN (…) AND scored_at >= …` lets the planner
        # range-scan every recent insight of the type when its statistics lag behind the newest
        # scores (the estimate for "scored in the last hour" is then a handful of rows): that read
        # grew with the insights of the whole cache window, 3 → 21 ms per batch at 300k events.
        table = Insight._meta.db_table
        columns = ", ".join(f"x.{connection.ops.quote_name(c)}" for c in _DECIDING)
        found = Insight.objects.raw(
            "SELECT i.* FROM unnest(%s::varchar[]) AS e(entity_id) CROSS JOIN LATERAL ("  # noqa: S608 - model metadata
            f"SELECT {columns} FROM {connection.ops.quote_name(table)} AS x WHERE x.entity_type = %s "
            "AND x.entity_id = e.entity_id AND x.scored_at >= %s ORDER BY x.scored_at DESC, x.id DESC LIMIT 1) i",
            [sorted(ids), entity_type, since],
        )
        return {insight.entity_id: insight for insight in found}
    latest: dict[str, Insight] = {}
    for insight in (
        Insight.objects.filter(entity_type=entity_type, entity_id__in=ids, scored_at__gte=since)
        .order_by("entity_id", "-scored_at", "-pk")
        .only(*(f.removesuffix("_id") if f.startswith("cached_from") else f for f in _DECIDING))
    ):
        latest.setdefault(insight.entity_id, insight)
    return latest


def _new_insight(
    *,
    entity_type: str,
    entity_id: str,
    alert_id: int | None,
    features: dict[str, float],
    now: datetime,
    result: local_model.Score,
) -> Insight:
    """An entity's local score (`result`) into an unsaved Insight; Bedrock writes its explanation and
    actions instead when enabled, a budget slot is claimed and it answers."""
    fallback_reason = ""
    model_id = settings.BEDROCK_MODEL_ID
    if model_id and bedrock_enabled():
        fallback_reason = bedrock.unavailable_reason() or budget_claim(now=now)
        if not fallback_reason:
            try:
                reply = bedrock.converse_score(
                    entity_type=entity_type,
                    entity_id=entity_id,
                    features=features,
                    local=result,
                    model_id=model_id,
                )
            except bedrock.BedrockError as exc:
                fallback_reason = f"{BEDROCK_FAILED_PREFIX}: {exc}"[:300]
                logger.warning("bedrock fell back", extra={"entity_id": entity_id, "reason": str(exc)})
            else:
                # The risk, level and drivers stay ours (one definition of risk, calibrated against the
                # simulator's truth); the model writes the explanation and the actions.
                result = replace(
                    result,
                    explanation=reply.explanation,
                    recommendations=reply.recommendations,
                    model=f"{BEDROCK_PREFIX}{settings.BEDROCK_MODEL_ID}",
                )
    return Insight.from_score(
        replace(result, features=features),
        entity_type=entity_type,
        entity_id=entity_id,
        scored_at=now,
        alert_id=alert_id,
        fallback_reason=fallback_reason,
    )


def _log_scored(insight: Insight) -> None:
    logger.info(
        "insight scored",
        extra={
            "entity_type": insight.entity_type,
            "entity_id": insight.entity_id,
            "alert_id": insight.alert_id,
            "risk": insight.risk,
            "model": insight.model,
        },
    )


def insights_score_alerts(*, items: list[tuple[str, str, int | None]], now: datetime) -> list[Insight]:
    """`insight_score` for many (entity_type, entity_id, alert_id) at once — the alerts one batch
    raised. Same results as scoring them one by one in order, in a handful of statements: one
    snapshot read and one cache read per entity type, one bulk INSERT of the new insights, one live
    push. An entity that appears twice is scored once; its other alerts get copies (as from the
    cache). Entities without a snapshot are skipped. Returns the insights in the items' order."""
    by_type: dict[str, set[str]] = {}
    for entity_type, entity_id, _alert_id in items:
        if entity_type not in ENTITY_TYPES:
            raise ValueError(f"unknown entity type {entity_type!r}")
        by_type.setdefault(entity_type, set()).add(entity_id)
    features: dict[tuple[str, str], dict[str, float]] = {}
    cached: dict[tuple[str, str], Insight] = {}
    for entity_type, ids in by_type.items():
        features.update({(entity_type, k): v for k, v in _snapshots(entity_type, ids).items()})
        cached.update({(entity_type, k): v for k, v in _latest_cached(entity_type, ids, now=now).items()})
    fresh: dict[tuple[str, str], Insight] = {}
    later: list[tuple[int, tuple[str, str], int | None]] = []  # answered from the cache or this batch
    out: list[Insight | None] = [None] * len(items)
    cuts = health_cuts()
    for i, (entity_type, entity_id, alert_id) in enumerate(items):
        key = (entity_type, entity_id)
        if key not in features:
            logger.info(
                "nothing to score (no snapshot, or not enough data yet)",
                extra={"entity_type": entity_type, "entity_id": entity_id},
            )
            continue
        hit = cached.get(key)
        if key in fresh or (
            hit is not None
            and not local_model.features_moved(
                entity_type=entity_type, before=hit.features, after=features[key]
            )
        ):
            later.append((i, key, alert_id))
            continue
        result = local_model.score(
            entity_type=entity_type, entity_id=entity_id, features=features[key], cuts=cuts
        )
        if hit is not None and local_model.same_story(entity_type=entity_type, before=hit, after=result):
            later.append((i, key, alert_id))  # figures moved, the story did not: kept (no new row, no push)
            continue
        fresh[key] = out[i] = _new_insight(
            entity_type=entity_type,
            entity_id=entity_id,
            alert_id=alert_id,
            features=features[key],
            now=now,
            result=result,
        )
    created = create_objects(model=Insight, objs=list(fresh.values()))
    for insight in created:
        _log_scored(insight)
    _publish(*created)
    for i, insight in _reuse(
        [(i, fresh.get(key) or cached[key], alert_id) for i, key, alert_id in later]
    ).items():
        out[i] = insight
    return [insight for insight in out if insight is not None]


def insights_purge(*, now: datetime, days: int = 90, batch_size: int = 5000) -> int:
    """Delete insights scored more than `days` ago, in batches of ids (short transactions); the
    number deleted. Called by the retention task (ingest/retention.py) with its settings."""
    budget_purge(now=now)
    old = Insight.objects.filter(scored_at__lt=now - timedelta(days=days))
    total = 0
    while True:
        ids = list(old.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return total
        total += Insight.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch_size:
            return total


# Entities whose snapshot has not changed for this long are not ranked by the beat (gone quiet).
RANK_ACTIVE_DAYS = 30
RANK_CHUNK = 2000


def riskiest(*, entity_type: str, top_n: int, now: datetime) -> list[tuple[str, float]]:
    """The top_n (entity_id, local risk) among entities active in the last RANK_ACTIVE_DAYS,
    riskiest first; snapshots are read in chunks and ranked with numpy."""
    model, key, to_features = _snapshot_source(entity_type)
    qs = model.objects.filter(updated_at__gte=now - timedelta(days=RANK_ACTIVE_DAYS)).order_by("pk")
    if entity_type == "student":  # the risk is a function of the health score: the database ranks them
        lowest = qs.filter(health_score__isnull=False).order_by("health_score", "pk")[:top_n]
        return [(sid, churn_probability(h)) for sid, h in lowest.values_list("student_id", "health_score")]
    best: list[tuple[float, str]] = []
    ids: list[str] = []
    rows: list[dict[str, float]] = []

    def flush() -> None:
        nonlocal best
        risk = local_model.risks(entity_type=entity_type, rows=rows)
        best = heapq.nlargest(top_n, best + list(zip(risk.tolist(), ids, strict=True)))
        ids.clear()
        rows.clear()

    for snap in qs.iterator(chunk_size=RANK_CHUNK):
        ids.append(getattr(snap, key))
        rows.append(to_features(snap))
        if len(rows) >= RANK_CHUNK:
            flush()
    flush()
    return [(entity_id, round(risk, 4)) for risk, entity_id in best]


def insights_score_riskiest(*, now: datetime, top_n: int) -> dict[str, int]:
    """Score the top_n riskiest students and tutors (by the local model); the cache keeps
    unchanged ones, the budget bounds Bedrock. Returns counts for the task's log."""
    out = {"ranked": 0, "scored": 0, "cached": 0}
    if top_n <= 0:
        return out
    for entity_type in ENTITY_TYPES:
        ranked = riskiest(entity_type=entity_type, top_n=top_n, now=now)
        out["ranked"] += len(ranked)
        items: list[tuple[str, str, int | None]] = [
            (entity_type, entity_id, None) for entity_id, _risk in ranked
        ]
        for insight in insights_score_alerts(items=items, now=now):
            out["scored" if insight.scored_at == now else "cached"] += 1
    logger.info("riskiest scored", extra=out)
    return out


def student_risks(*, now: datetime) -> list[tuple[str, float, float]]:
    """(student, churn risk, DOMAIN's sanity-formula risk 0–1) for every scored student updated in 30
    days: what bench/signal_quality.py calibrates against the simulator's truth. The sanity formula reads the
    platform's health where there is one (as the prototype did), else ours."""
    snaps = StudentSnapshot.objects.filter(
        updated_at__gte=now - timedelta(days=30), health_score__isnull=False
    ).only("student_id", "health_score", "platform_health_score", "ib_calls_14d", "sessions_7d")
    out = []
    for snap in snaps:
        if snap.health_score is None:  # excluded by the query; the type cannot know
            continue
        health = snap.platform_health_score if snap.platform_health_score is not None else snap.health_score
        sanity = 0.5 * (100 - health) + min(5 * snap.ib_calls_14d, 30) + 4 * max(0, 5 - snap.sessions_7d)
        out.append((snap.student_id, churn_probability(snap.health_score), min(sanity, 100) / 100))
    return out
