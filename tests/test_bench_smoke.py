"""The processing benchmarks still run (issue 10: CI runs their smoke modes so they do not rot). Each
prints its figure; nothing is timed here. The other scripts' smoke modes run in `make bench-smoke`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.postgres


def _smoke(script: str, *args: str) -> str:
    """Run a bench script with `args` (its `--smoke` mode when none are given) on a database of its own."""
    database = f"iops_bench_smoke_{Path(script).stem}_{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--database", database, *(args or ["--smoke"])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_history_bench_smoke_prints_batch_cost_at_both_sizes():
    # Smaller than its --smoke (20,000 then 100,000 events).
    out = _smoke(
        "history.py", "--sizes", "10000", "50000", "--students", "1000", "--batches", "3", "--warmup", "1"
    )
    assert "RESULT per-batch cost" in out
    assert "10,000 stored" in out and "50,000 stored" in out and "ratio" in out


def test_aggregate_bench_smoke_prints_throughput_baseline_and_phases():
    # Smaller than its --smoke (whose 1,000 per-event baseline commits take ~10 s here).
    out = _smoke(
        "aggregate.py",
        *("--events", "5000", "--students", "1000", "--baseline-events", "200"),
        *("--detail", "--live-rate", "5000"),
    )
    assert "process_batch:" in out and "baseline:" in out and "ratio:" in out
    for phase in ("store", "fold", "refresh", "  window sums", "  snapshot upsert", "rules", "after commit"):
        assert f"\n  {phase} " in out, phase
    growth = out.split("\nCPU vs history, by phase:", 1)[1]  # each phase, first tenth vs last tenth
    assert growth.lstrip().startswith("ms per 1,000 events") and "(the live tail, 5,000 events/s)" in growth
    assert "\n  refresh " in growth and "x\n" in growth
    assert "2-core ceiling for this work:" in out
    assert "COPY ceiling:" in out and "pipeline / ceiling" in out
    assert "2 workers:" in out and "peak RSS of a worker" in out  # the same events with 2 processes
    summary = out.split("\nissue 20, this run", 1)[1]  # issue 20's figures together, at the end
    for line in ("COPY ceiling", "pipeline, 1 worker", "pipeline, 2 workers", "batch cost vs history"):
        assert f"\n  {line} " in summary, line
    assert "of the ceiling (bar ≥ 0.33:" in summary and "\n  peak RSS " in summary


def test_growth_bench_smoke_prints_both_points_and_the_grown_statements():
    out = _smoke("growth.py", "--events", "10000", "--students", "1000")  # half its --smoke
    assert "(baseline)" in out and "ms per batch" in out and "grew most" in out


def test_signal_bench_smoke_scores_a_scenario_against_the_simulators_truth():
    # A few simulated hours of one scenario (its --smoke runs all four over a day).
    out = _smoke(
        "signal_quality.py",
        "--scenario",
        "churn_wave",
        "--students",
        "300",
        "--history-days",
        "2",
        "--live-days",
        "0.25",
        "--jobs",
        "1",
    )
    assert "churn_wave     ALL" in out and "notifications" in out and "at risk @ end" in out
    assert "insights scored " in out and "/day for alerts)" in out
