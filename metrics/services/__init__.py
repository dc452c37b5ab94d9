"""Metrics' write side, one job a module:

- `fold`: a batch of new events folded into sessions, buckets and platform readings (`fold_events`)
- `sessions`: Session rows (a session counts once), their bucket deltas, first/last-session facts
- `buckets`: the hour buckets per student and tutor and the global minute series
- `reports`: latest-wins health and availability readings on the snapshots
- `balance`: supply–demand readings and the balance-status hysteresis per subject × region
- `cells`: subject × region rows and our own demand/supply figures (`subject_regions_refresh`)
- `snapshots`: refreshes of touched and stale snapshots (`snapshots_refresh`, `snapshots_refresh_stale`)
- `students`, `tutors`: one entity kind's snapshot recomputed from window sums
- `rebuild`: every derived table recomputed from stored events (`metrics_rebuild`)
- `columns`: the value columns, windows and snapshot fields, named once; `db`: shared statements
"""

from metrics.services.balance import BALANCE_ENTER, BALANCE_LEAVE
from metrics.services.cells import subject_regions_refresh
from metrics.services.columns import (
    HEALTH_VALUES,
    IB_VALUES,
    MINUTE_VALUES,
    SESSION_VALUES,
    STUDENT_REFRESH_FIELDS,
    STUDENT_VALUES,
    STUDENT_WINDOWS,
    TUTOR_REFRESH_FIELDS,
    TUTOR_WINDOWS,
)
from metrics.services.fold import fold_events, retention_horizon
from metrics.services.rebuild import DERIVED_MODELS, RebuildResult, metrics_clear, metrics_rebuild
from metrics.services.snapshots import Touched, snapshots_refresh, snapshots_refresh_stale
from metrics.services.students import velocity_trend

__all__ = [
    "BALANCE_ENTER",
    "BALANCE_LEAVE",
    "DERIVED_MODELS",
    "HEALTH_VALUES",
    "IB_VALUES",
    "MINUTE_VALUES",
    "SESSION_VALUES",
    "STUDENT_REFRESH_FIELDS",
    "STUDENT_VALUES",
    "STUDENT_WINDOWS",
    "TUTOR_REFRESH_FIELDS",
    "TUTOR_WINDOWS",
    "RebuildResult",
    "Touched",
    "fold_events",
    "metrics_clear",
    "metrics_rebuild",
    "retention_horizon",
    "snapshots_refresh",
    "snapshots_refresh_stale",
    "subject_regions_refresh",
    "velocity_trend",
]
