"""Statistics, markdown tables and the chart."""

from __future__ import annotations

import math
import statistics
import typing as t
from collections.abc import Sequence
from pathlib import Path

CHART_PATH = Path(__file__).resolve().parent / "hit_medians.png"


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest sample with at least
    ``fraction`` of all samples at or below it."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def micros(nanoseconds: float) -> str:
    return f"{nanoseconds / 1000:,.1f}"


def ratio(value: float, base: float | None) -> str:
    if base is None or base <= 0:
        return "-"
    return f"{value / base:.2f}x"


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[t.Any]], align: str = "") -> str:
    """A GitHub-flavoured markdown table, padded so it also reads as text.
    ``align`` holds one letter per column, ``l`` or ``r`` (default: the first
    column left, the rest right)."""
    cells = [[str(cell) for cell in row] for row in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [
        max(3, len(header), *(len(row[i]) for row in cells)) for i, header in enumerate(headers)
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            value.ljust(width) if side == "l" else value.rjust(width)
            for value, width, side in zip(values, widths, align, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * width if side == "l" else "-" * (width - 1) + ":"
        for width, side in zip(widths, align, strict=True)
    ]
    return "\n".join([line(headers), line(rule), *(line(row) for row in cells)])


def hit_chart(bars: Sequence[tuple[str, float, str]], title: str, path: Path = CHART_PATH) -> Path:
    """A horizontal bar chart of medians in microseconds. ``bars`` holds
    (label, median in ns, role) with role ``reference``, ``peer`` or ``ours``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colours = {"reference": "#9e9e9e", "peer": "#4c72b0", "ours": "#dd8452"}
    labels = [label for label, _, _ in bars]
    values = [value / 1000 for _, value, _ in bars]
    figure, axes = plt.subplots(figsize=(8, 0.55 * len(bars) + 1.4), layout="constrained")
    positions = list(range(len(bars)))
    axes.barh(positions, values, color=[colours[role] for _, _, role in bars])
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.set_xlabel("median latency per request, µs (lower is better)")
    axes.set_title(title, fontsize=10)
    for position, value in zip(positions, values, strict=True):
        axes.text(value, position, f" {value:,.0f} µs", va="center", fontsize=9)
    axes.set_xlim(0, max(values) * 1.2)
    names = {"reference": "reference (not a cache hit)", "peer": "peer cache", "ours": "ours"}
    present = [role for role in ("reference", "peer", "ours") if any(r == role for *_, r in bars)]
    axes.legend(
        handles=[Patch(color=colours[role], label=names[role]) for role in present],
        loc="lower right",
        fontsize=8,
        frameon=False,
    )
    axes.spines[["top", "right"]].set_visible(False)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
