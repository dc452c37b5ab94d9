"""Bounded deletes for retention: batches of ids, each one short transaction, within a time budget.

Each batch is `DELETE ... WHERE id BETWEEN lo AND hi AND <older than>`, so the workers' writes never
wait long and a run stopped halfway leaves a consistent database; the next run carries on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from django.db import models, transaction


@dataclass
class PruneBudget:
    """What one retention run may do (rows a batch, a monotonic deadline) and what it did."""

    batch_size: int
    deadline: float  # time.monotonic() after which no new batch starts
    deleted: dict[str, int] = field(default_factory=dict)  # by model label
    batches: int = 0
    complete: bool = True  # False when the deadline came first (the next run continues)

    def expired(self) -> bool:
        if time.monotonic() > self.deadline:
            self.complete = False
            return True
        return False

    def delete_older(self, model: type[models.Model], *, column: str, cutoff: datetime) -> int:
        """Delete `model` rows whose `column` is before `cutoff`, oldest ids first; the number deleted."""
        total = 0
        old = model._default_manager.filter(**{f"{column}__lt": cutoff})
        while not self.expired():
            ids = list(old.order_by("id").values_list("id", flat=True)[: self.batch_size])
            if not ids:
                break
            with transaction.atomic():
                n, _ = old.filter(id__gte=ids[0], id__lte=ids[-1]).delete()
            total += n
            self.batches += 1
            if len(ids) < self.batch_size:
                break
        self.record(model._meta.label, total)
        return total

    def record(self, label: str, n: int) -> None:
        self.deleted[label] = self.deleted.get(label, 0) + n
