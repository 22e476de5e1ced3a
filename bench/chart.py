"""The report's figures as a PNG: ``python bench/chart.py SPEC.json OUT.png``.

Run by the bench with the python of ``bench/.cache/plot`` (a virtualenv holding matplotlib,
which is not a project dependency), so this file imports nothing from the project: the bench
writes the figures as JSON (``bench.report.chart_spec``) and this script draws them.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import textwrap
from pathlib import Path
from typing import Any

COLORS = {
    "bare envoy": "#7f7f7f",
    "gateway": "#1f77b4",
    "gateway, envoy accounting": "#17becf",
    "litellm": "#d62728",
    "portkey": "#2ca02c",
}


def _bars(ax: Any, panel: dict[str, Any]) -> None:
    categories: list[str] = panel["categories"]
    series: dict[str, list[float | None]] = panel["series"]
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
        heights = [v if v is not None and v > 0 else math.nan for v in values]
        bars = ax.bar(xs, heights, width, label=name, color=COLORS.get(name))
        for bar, value in zip(bars, values, strict=True):
            if value is not None and value > 0:
                text = f"{value:,.0f}" if value >= 10 else f"{value:.2f}"
                ax.annotate(
                    text,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90,
                )
    ax.set_xticks(range(len(categories)), categories, fontsize=7, rotation=15)
    if panel.get("log"):
        ax.set_yscale("log")
        ticker = importlib.import_module("matplotlib.ticker")
        plain = ticker.FuncFormatter(lambda v, _: f"{v:,.10g}")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    hline = panel.get("hline")
    if hline:
        ax.axhline(hline["y"], color="black", linestyle="--", linewidth=0.8, label=hline["label"])
    ax.set_ylabel(panel["ylabel"], fontsize=8)
    if len(series) > 1 or hline:
        ax.legend(fontsize=7)


def _targets(ax: Any, panel: dict[str, Any]) -> None:
    labels: list[str] = panel["labels"]
    values: list[float] = panel["values"]
    colors = ["#2ca02c" if v >= 1 else "#d62728" for v in values]
    ys = range(len(labels))
    bars = ax.barh(ys, values, color=colors)
    for bar, text in zip(bars, panel["measured"], strict=True):
        ax.annotate(
            f" {text}",
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            va="center",
            fontsize=7,
        )
    ax.axvline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ticker = importlib.import_module("matplotlib.ticker")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="x", which="minor", labelsize=6)
    ax.set_xlabel(
        "measured / target for an 'at least' target, target / measured for an 'at most' one:"
        " 1 or more = met",
        fontsize=8,
    )


def draw(spec: dict[str, Any], out: Path) -> None:
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    panels: list[dict[str, Any]] = [p for p in spec["panels"] if p.get("kind") != "targets"]
    targets = [p for p in spec["panels"] if p.get("kind") == "targets"]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    extra = 0.28 * len(targets[0]["labels"]) + 1.2 if targets else 0.0
    fig = plt.figure(figsize=(15, 4.3 * rows + extra))
    heights = [4.3] * rows + ([extra] if targets else [])
    grid = fig.add_gridspec(len(heights), cols, height_ratios=heights)
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.set_title(panel["title"], fontsize=10)
        _bars(ax, panel)
        ax.grid(axis="y", linewidth=0.3)
    if len(panels) % cols and spec.get("summary"):
        ax = fig.add_subplot(grid[rows - 1, cols - 1])
        ax.axis("off")
        text = "\n".join(textwrap.fill(line, 70) for line in spec["summary"])
        ax.text(0, 1, text, va="top", ha="left", fontsize=8, family="monospace")
    if targets:
        ax = fig.add_subplot(grid[rows, :])
        ax.set_title(targets[0]["title"], fontsize=10)
        _targets(ax, targets[0])
        ax.grid(axis="x", linewidth=0.3)
    fig.suptitle(spec["title"], fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(out, dpi=110)


def main(argv: list[str]) -> int:
    spec_path, out = argv
    draw(json.loads(Path(spec_path).read_text()), Path(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
