"""Churn (student) and burnout (tutor) insights. Depends on metrics only; alerts link by id."""

from __future__ import annotations

from django.db import models


class Insight(models.Model):
    entity_type = models.CharField(max_length=20)  # student | tutor
    entity_id = models.CharField(max_length=64)
    alert_id = models.BigIntegerField(
        null=True, blank=True, db_index=True, help_text="the alert that triggered it"
    )
    risk = models.FloatField(help_text="0–1")
    level = models.CharField(max_length=10)  # low | medium | high
    explanation = models.TextField()
    recommendations = models.JSONField(default=list)
    drivers = models.JSONField(default=list, help_text="[{feature, value, contribution}]")
    features = models.JSONField(default=dict)
    model = models.CharField(max_length=200)
    fallback_reason = models.CharField(max_length=300, blank=True, default="")
    scored_at = models.DateTimeField(db_index=True)
    # Set on a copy made when a cached insight answers another alert (each alert keeps its own row,
    # so every reader that looks insights up by alert_id finds it); copies are not new scorings.
    cached_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="copies"
    )

    class Meta:
        # Only what readers seek by: an entity's latest insights (with or without its type), an alert's,
        # a time range (retention, quality). No index on the type alone (two values) and no LIKE
        # indexes: every insight scored writes each index.
        indexes = [
            models.Index(fields=["entity_type", "entity_id", "-scored_at"]),
            models.Index(fields=["entity_id"], name="insight_entity_id"),
        ]
        ordering = ["-scored_at"]

    def __str__(self) -> str:
        return f"{self.entity_type} {self.entity_id}: {self.level} ({self.risk:.2f}, {self.model})"

    @classmethod
    def from_score(cls, score, *, entity_type: str, entity_id: str, scored_at, **fields) -> Insight:
        """An unsaved insight holding a model's `Score` (insights.local_model)."""
        return cls(
            entity_type=entity_type,
            entity_id=entity_id,
            risk=score.risk,
            level=score.level,
            explanation=score.explanation,
            recommendations=score.recommendations,
            drivers=score.drivers,
            features=score.features,
            model=score.model,
            scored_at=scored_at,
            **fields,
        )


class BedrockBudget(models.Model):
    """Bedrock calls claimed in one window (the minute or the UTC day that starts at `start`).

    A claim is one conditional UPDATE (calls = calls + 1 WHERE calls < limit), so concurrent
    workers can never claim more than the limit between them (insights.budget)."""

    window = models.CharField(max_length=10)  # minute | day
    start = models.DateTimeField()
    calls = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["window", "start"], name="insights_budget_window")]
        indexes = [models.Index(fields=["start"])]

    def __str__(self) -> str:
        return f"{self.window} {self.start:%Y-%m-%d %H:%M}: {self.calls}"
