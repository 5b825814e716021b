"""Reliability-diagram data (rows for ``dvc plots``) and the PNGs drawn from them.

Data rows have the columns :data:`COLUMNS`: ``system``, ``series`` (uncalibrated / calibrated),
``kind`` (``predicted``: confidence of the predicted class vs how often it was right; ``SPEECH`` /
``NONSPEECH``: the probability given to that class vs how often the clip was of that class),
``bin_lo``, ``bin_hi``, ``confidence`` (mean forecast in the bin), ``observed`` (observed frequency)
and ``count``. Only non-empty equal-width bins are listed.

matplotlib is imported inside the drawing functions (Agg backend, no pyplot), so importing this
module, and every stage that does not draw, stays fast.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from speech_calibration.fileio import atomic_path
from speech_calibration.stats import metrics

COLUMNS = ("system", "series", "kind", "bin_lo", "bin_hi", "confidence", "observed", "count")
KINDS = ("predicted", "SPEECH", "NONSPEECH")
SERIES_STYLE = {"uncalibrated": ("tab:red", "o"), "calibrated": ("tab:blue", "s")}


def forecasts(kind: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The (forecast, outcome) pairs one reliability curve plots; see the module doc for ``kind``."""
    y, p = np.asarray(y), np.asarray(p, dtype=float)
    if kind == "predicted":
        return metrics.top_label(y, p, threshold)
    if kind == "SPEECH":
        return p, (y == 1).astype(float)
    if kind == "NONSPEECH":
        return 1.0 - p, (y == 0).astype(float)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def reliability_rows(system: str, series: Mapping[str, np.ndarray], y: np.ndarray, *, n_bins: int = 15,
                     kinds: Sequence[str] = KINDS) -> list[dict]:
    """Rows of :data:`COLUMNS` for each series (name -> p(SPEECH) per clip) and each kind."""
    rows = []
    for name, p in series.items():
        for kind in kinds:
            f, o = forecasts(kind, y, p)
            t = metrics.reliability_table(f, o, n_bins)
            for i in range(len(t["count"])):
                rows.append({"system": system, "series": name, "kind": kind, "bin_lo": float(t["bin_lo"][i]),
                             "bin_hi": float(t["bin_hi"][i]), "confidence": float(t["confidence"][i]),
                             "observed": float(t["observed"][i]), "count": int(t["count"][i])})
    return rows


def rows_frame(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame(rows, columns=list(COLUMNS))


def _figure(n_panels: int, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.8 * n_panels, height), dpi=90)
    fig.subplots_adjust(left=0.1 / n_panels ** 0.5, right=0.98, bottom=0.14, top=0.84, wspace=0.3)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def plot_reliability(path: str | os.PathLike, rows: list[dict], *, title: str, kinds: Sequence[str] = ("predicted",),
                     legend: Mapping[str, str] | None = None) -> None:
    """One panel per kind: observed frequency against mean forecast per bin, marker area ~ count."""
    fig = _figure(len(kinds))
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
        lo = 0.5 if kind == "predicted" else 0.0
        for name, (color, marker) in SERIES_STYLE.items():
            r = [row for row in rows if row["kind"] == kind and row["series"] == name]
            if not r:
                continue
            x = [row["confidence"] for row in r]
            yv = [row["observed"] for row in r]
            size = [12 + 6 * row["count"] ** 0.75 for row in r]
            label = (legend or {}).get(name, name)
            ax.plot(x, yv, color=color, lw=1.2, alpha=0.8)
            ax.scatter(x, yv, s=size, color=color, marker=marker, alpha=0.8, label=label, zorder=3)
        ax.set_xlim(min(lo, 0.0) if kind != "predicted" else 0.45, 1.0)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("confidence of predicted class" if kind == "predicted" else f"p({kind})")
        ax.set_ylabel("observed accuracy" if kind == "predicted" else f"observed frequency of {kind}")
        ax.set_title(kind if len(kinds) > 1 else title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    if len(kinds) > 1:
        fig.suptitle(title, fontsize=11)
    _save(fig, path)


def plot_per_seed(path: str | os.PathLike, table: Sequence[Mapping], *, metrics_to_plot: Sequence[tuple[str, str]],
                  title: str) -> None:
    """Grouped bars per seed, uncalibrated vs calibrated, one panel per (metric key, axis label).

    ``table``: rows with ``seed``, ``series``, ``metric`` and ``value`` (None: undefined, no bar).
    """
    fig = _figure(len(metrics_to_plot), height=3.4)
    axes = fig.subplots(1, len(metrics_to_plot), squeeze=False)[0]
    seeds = list(dict.fromkeys(row["seed"] for row in table))
    x = np.arange(len(seeds))
    for ax, (key, label) in zip(axes, metrics_to_plot):
        for k, (name, (color, _)) in enumerate(SERIES_STYLE.items()):
            vals = [next((r["value"] for r in table if r["seed"] == s and r["series"] == name and r["metric"] == key),
                         None) for s in seeds]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(x + (k - 0.5) * 0.38, vals, width=0.38, color=color, alpha=0.85, label=name)
        ax.set_xticks(x, seeds, fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    _save(fig, path)
