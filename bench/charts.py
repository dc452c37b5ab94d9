"""Chart images for bench/RESULTS.md (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

CHARTS = Path(__file__).resolve().parent / "charts"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency_chart(path: Path, series: dict[str, list[float]], *, title: str) -> Path:
    """Histogram and CDF of latencies (milliseconds) per series, with p50/p95/p99 marked."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    top = max((max(v) for v in series.values() if v), default=1.0)
    bins = [top * i / 50 for i in range(51)]
    for colour, (name, values) in zip(colours, series.items(), strict=False):
        if not values:
            continue
        marks = {p: _pct(values, p) for p in (50, 95, 99)}
        label = f"{name}: p50 {marks[50]:.0f} · p95 {marks[95]:.0f} · p99 {marks[99]:.0f} ms"
        hist.hist(values, bins=bins, alpha=0.55, color=colour, label=label)
        ordered = sorted(values)
        cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], color=colour, label=name)
        for p, style in ((50, ":"), (95, "--"), (99, "-.")):
            for ax in (hist, cdf):
                ax.axvline(marks[p], color=colour, linestyle=style, linewidth=1)
            cdf.annotate(
                f"p{p}", (marks[p], p / 100), textcoords="offset points", xytext=(4, -10), color=colour
            )
    hist.set(xlabel="latency (ms)", ylabel="events", title="distribution")
    hist.legend(fontsize=8, loc="upper right")
    cdf.set(xlabel="latency (ms)", ylabel="fraction of events seen", title="CDF (: p50, -- p95, -. p99)")
    cdf.set_ylim(0, 1.02)
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scaling_chart(path: Path, results: dict[int, float], *, title: str) -> Path:
    """Events/s against workers, with the ideal line (linear from the smallest worker count)."""
    plt = _pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    workers = sorted(results)
    base_n = workers[0]
    base = results[base_n]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    ax.plot(workers, [base * n / base_n for n in workers], "--", color="grey", label="ideal (linear)")
    ax.plot(workers, [results[n] for n in workers], "o-", color="tab:blue", label="measured")
    for n in workers:
        ax.annotate(
            f"{results[n]:,.0f}/s ({results[n] / base:.2f}×)",
            (n, results[n]),
            textcoords="offset points",
            xytext=(6, -14),
        )
    cpus = os.cpu_count() or 1
    if workers[0] <= cpus <= workers[-1]:
        ax.axvline(cpus, color="tab:red", linestyle=":", linewidth=1, label=f"{cpus} CPUs")
    ax.set(xlabel="workers", ylabel="events/s processed", title=title, xticks=workers)
    ax.set_xlim(workers[0] - 0.3, workers[-1] + 1.0)
    ax.set_ylim(0, max(base * workers[-1] / base_n, max(results.values())) * 1.1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
