"""How much dev data each calibration method needs: test NLL and smooth ECE against the size of the dev set.

For each size of ``learning_curve.sizes`` (dev clips), :func:`draw_group_subsets` draws ``repeats`` random
subsets of **whole groups** (speakers, sources): groups are visited in a random order and added whole until the
subset holds at least that many clips and both classes (while a class is missing, the next group taken is the
first unvisited one holding it, so a design of speech-only and non-speech-only groups still gets both). A subset
therefore holds ``n_dev >= size`` clips; ``n_dev`` is reported, and it is the x of the plot. Every method of the
registry but ``none`` is refitted on each subset exactly as the calibrate stage fits it
(:func:`speech_calibration.calibration.fitting.fit`) and applied to the **full test set**; a subset drawn twice
is fitted once (a fit is deterministic). The last size, ``all``, is the full-dev fit itself: one repeat, no
resampling, equal to the calibrator the calibrate stage writes for that method.

Per method and size: the mean test NLL and top-label smooth ECE (:mod:`speech_calibration.stats.metrics`) over
the repeats, their percentile interval (only from ``MIN_DISTINCT`` distinct values on, else their range and the
reason in words, as the ``all`` row always), the number of repeats and of distinct subsets, the uncalibrated value,
and the paired difference to temperature scaling on the same subsets (``nll_minus_temperature``: its mean, interval
and ``share_lower``, the share of repeats where the method's test NLL is lower; a subset drawn twice counts twice).
The subsets depend only on ``learning_curve.seed``, the size and the dev groups, so every seed's system is refitted
on the same subsets. A seed's rows (``per_seed``) spread over its repeats: which dev subset one happens to have, on
this test set. The pooled rows (``pooled``) put every seed's repeats side by side, so their spread holds both which
dev subset one has and which seed trained the model (for ``all``, one fit per seed: the seeds alone).

The label-free methods (``contextual``, ``batch``) are refitted like the others, and come out flat by
construction: neither reads the dev labels nor the dev logits' values (contextual removes the prior of the
content-free inputs, batch the prior of the set it scores), so they show what no labelled dev data buys. The
predict stage writes every seed's content-free logits (``dev_content_free.csv``); without that file the stage stops
with an error naming it rather than leave ``contextual`` out.
``none`` is the uncalibrated value every row carries. ``auto`` is not on the curve: it is a choice among these
methods, and its leave-one-group-out selection needs at least two groups, which the small sizes often lack.

A size no subset can be drawn for (more clips than dev holds, or only the whole dev set reaches it) is listed
under ``not_drawn`` with the reason, not silently dropped.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from speech_calibration import layout
from speech_calibration.calibration.fitting import fit, quiet
from speech_calibration.calibration.methods import FITTED
from speech_calibration.data import schema
from speech_calibration.errors import UserError
from speech_calibration.fileio import atomic_path, write_csv, write_json, write_text
from speech_calibration.params import ALL_DEV, Params
from speech_calibration.stats import metrics
from speech_calibration.stats.resampling import MIN_DISTINCT, keyed_rng, percentile_interval

log = logging.getLogger(__name__)

CURVE_METHODS = tuple(m for m in FITTED if m != "none")  # none is the uncalibrated value every row carries
REFERENCE_METHOD = "temperature"  # the method every other one is compared with, subset by subset
SCORES = ("nll", "ece_smooth")


# ------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Split:
    """One split of one system: the two answer logits, the labels (1 = SPEECH) and the group of each clip."""

    logit_a: np.ndarray
    logit_b: np.ndarray
    y: np.ndarray
    groups: np.ndarray

    @classmethod
    def from_frame(cls, frame) -> Split:
        """From a predictions frame (:func:`speech_calibration.data.schema.read_predictions`)."""
        return cls(frame[schema.LOGIT_A].to_numpy(float), frame[schema.LOGIT_B].to_numpy(float),
                   schema.label_to_int(frame[schema.LABEL]), frame[schema.GROUP_ID].to_numpy())

    def subset(self, idx: np.ndarray) -> Split:
        return Split(self.logit_a[idx], self.logit_b[idx], self.y[idx], self.groups[idx])


def scores(y: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """Test NLL (from the log-odds, unclipped: :func:`~speech_calibration.stats.metrics.nll`) and top-label smooth
    ECE of the log-odds of SPEECH ``z``; ``z`` may be ``(fits, clips)``, one fit per row.

    Row by row: the rows of different fits share no forecasts, and ``smooth_ece``'s 2-D path (built for bootstrap
    resamples of one set of forecasts) would build its kernel over every row's forecasts at once.
    """
    rows = np.atleast_2d(np.asarray(z, dtype=float))
    out = {"nll": [], "ece_smooth": []}
    for row in rows:
        p = metrics.sigmoid(row)
        conf, correct = metrics.top_label(y, p)
        out["nll"].append(float(metrics.nll(y, p, log_odds=row)))
        out["ece_smooth"].append(float(metrics.smooth_ece(conf, correct)))
    return {k: np.array(v) if np.ndim(z) == 2 else np.array(v[0]) for k, v in out.items()}


# ---------------------------------------------------------------------------------------- drawing
def draw_group_subsets(groups, y, size: int, repeats: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``repeats`` random subsets of whole groups holding at least ``size`` clips and both classes.

    Each subset is the sorted tuple of its group codes (``np.unique(groups, return_inverse=True)``'s numbering).
    Groups are visited in a random order and added whole; while the subset lacks a class, the next group added
    is the first unvisited one that holds it. ``ValueError`` when dev holds fewer than ``size`` clips or one class.
    """
    codes, y = _codes(groups), np.asarray(y)
    n_groups = int(codes.max()) + 1
    sizes = np.bincount(codes, minlength=n_groups)
    holds = [set(np.unique(y[codes == g]).tolist()) for g in range(n_groups)]
    if size > codes.size:
        raise ValueError(f"dev holds {codes.size} clips, fewer than {size}")
    if set().union(*holds) != {0, 1}:
        raise ValueError("dev holds only one class")
    out = []
    for _ in range(repeats):
        unvisited = list(rng.permutation(n_groups))
        chosen, n, classes = [], 0, set()
        while n < size or len(classes) < 2:
            missing = {0, 1} - classes
            pick = next(g for g in unvisited if holds[g] & missing) if missing and chosen else unvisited[0]
            unvisited.remove(pick)
            chosen.append(int(pick))
            n += int(sizes[pick])
            classes |= holds[pick]
        out.append(tuple(sorted(chosen)))
    return out


def _codes(groups) -> np.ndarray:
    return np.unique(np.asarray(groups), return_inverse=True)[1].ravel()


def subset_clips(groups, subset: tuple[int, ...]) -> np.ndarray:
    """The clip indices (in file order) of the groups of ``subset``."""
    return np.flatnonzero(np.isin(_codes(groups), subset))


# ----------------------------------------------------------------------------------------- fitting
@dataclass
class Cell:
    """One method at one size: a value per repeat (its subset's fit scored on test); pooled (:func:`pool`), a value
    per repeat of every seed."""

    method: str
    size: int | str
    n_dev: np.ndarray  # clips in each repeat's subset
    n_groups: np.ndarray  # groups in each repeat's subset
    values: dict[str, np.ndarray]  # score name -> test score of each repeat's fit
    minus_reference: np.ndarray | None  # test NLL minus temperature scaling's on the same subset
    n_distinct: int  # distinct subsets drawn; pooled, the most any one seed drew
    uncalibrated: dict[str, float] = field(default_factory=dict)


def system_curve(dev: Split, test: Split, *, sizes: Sequence[int | str], repeats: int, seed: int,
                 temperature_bounds: Sequence[float], content_free=None,
                 methods: Sequence[str] = CURVE_METHODS) -> tuple[list[Cell], dict[str, str]]:
    """Every method refitted on dev subsets of every size and scored on the full test set.

    Returns the cells (method x size) and ``{size: reason}`` for each size no subset could be drawn for.
    ``ValueError`` when ``methods`` holds ``contextual`` and ``content_free`` is None.
    """
    if "contextual" in methods and content_free is None:
        raise ValueError("contextual is on the curve but no content-free logits were given")
    uncal = {k: float(v) for k, v in scores(test.y, test.logit_a - test.logit_b).items()}
    n_groups = int(_codes(dev.groups).max()) + 1
    everything = tuple(range(n_groups))
    cells, not_drawn = [], {}
    for size in sizes:
        if size == ALL_DEV:
            subsets = [everything]  # the full-dev fit: one repeat, no resampling
        else:
            try:
                subsets = draw_group_subsets(dev.groups, dev.y, int(size), repeats,
                                             keyed_rng(seed, "learning_curve", str(size)))
            except ValueError as err:
                not_drawn[str(size)] = f"cannot be drawn: {err}"
                continue
            if all(s == everything for s in subsets):
                not_drawn[str(size)] = (f"cannot be drawn: only all {n_groups} dev groups ({dev.y.size} clips) reach "
                                        f"{size} clips; see the {ALL_DEV} row")
                continue
        distinct = sorted(set(subsets))
        where = np.array([distinct.index(s) for s in subsets])
        clips = [subset_clips(dev.groups, s) for s in distinct]
        n_dev = np.array([clips[i].size for i in where])
        n_grp = np.array([len(subsets[r]) for r in range(len(subsets))])
        per_method = {}
        with quiet():
            for method in methods:
                z = np.stack([_fit_predict(method, dev.subset(c), test, content_free, temperature_bounds) for c in clips])
                per_method[method] = {k: v[where] for k, v in scores(test.y, z).items()}
        ref = per_method.get(REFERENCE_METHOD)
        for method in methods:
            minus = None if ref is None or method == REFERENCE_METHOD else per_method[method]["nll"] - ref["nll"]
            cells.append(Cell(method, size, n_dev, n_grp, per_method[method], minus, len(distinct), uncal))
    return cells, not_drawn


def _fit_predict(method: str, dev: Split, test: Split, content_free, bounds) -> np.ndarray:
    """Fit as the calibrate stage does (:func:`speech_calibration.calibration.dev.calibrate_system`); the calibrated
    log-odds of SPEECH on test."""
    cal = fit(method, dev.logit_a, dev.logit_b, dev.y, content_free=content_free, groups=dev.groups,
              temperature_bounds=tuple(bounds))
    return cal.log_odds(test.logit_a, test.logit_b)


# ---------------------------------------------------------------------------------------- summary
def _interval(values: np.ndarray, ci: float) -> dict:
    """The mean over the values, and their percentile interval where they take at least ``MIN_DISTINCT`` distinct
    values (the rule of every interval here, :mod:`speech_calibration.stats.resampling`). Fewer: ``lo = hi = None``,
    their range (``min``, ``max``) and the reason in words; the percentile interval of a few values is their range
    and says more about those few subsets than about another one."""
    values = np.asarray(values, dtype=float)
    mean = float(np.mean(values))
    distinct = int(np.unique(values).size)
    if distinct < MIN_DISTINCT:
        return {"mean": mean, "lo": None, "hi": None, "min": float(values.min()), "max": float(values.max()),
                "reason": f"{distinct} distinct value{'s' * (distinct != 1)}: too few for an interval "
                          f"(needs >= {MIN_DISTINCT})"}
    lo, hi = percentile_interval(values, ci)
    return {"mean": mean, "lo": lo, "hi": hi}


def summarise(cell: Cell, ci: float) -> dict:
    """One row of the report: means and percentile intervals over the cell's repeats (every seed's, for a pooled
    cell), the uncalibrated value, and against temperature scaling ``share_lower``: the share of repeats (draws, a
    subset drawn twice counted twice) where the method's test NLL is lower."""
    row = {"method": cell.method, "size": cell.size, "n_repeats": int(cell.n_dev.size), "n_distinct_subsets": cell.n_distinct,
           "n_dev_mean": float(np.mean(cell.n_dev)), "n_dev_min": int(cell.n_dev.min()), "n_dev_max": int(cell.n_dev.max()),
           "n_groups_mean": float(np.mean(cell.n_groups)), "label_free": cell.method in ("contextual", "batch")}
    for k in SCORES:
        row[f"test_{k}"] = _interval(cell.values[k], ci)
        row[f"uncalibrated_{k}"] = cell.uncalibrated[k]
    if cell.minus_reference is not None:
        d = cell.minus_reference
        row["nll_minus_temperature"] = {**_interval(d, ci), "share_lower": float(np.mean(d < 0))}
    return row


def pool(per_seed: Sequence[Sequence[Cell]]) -> list[Cell]:
    """The seeds' cells of each (method, size) as one cell: their repeats side by side (seeds x repeats values), so
    the spread over them holds both the dev subset and the seed; ``n_distinct`` is the most distinct subsets any
    one seed drew, the uncalibrated values the mean over seeds.

    Only the (method, size) cells every seed has are pooled (a size drawn for one seed's dev set but not another's).
    """
    out = []
    for cell in per_seed[0]:
        same = [c for cells in per_seed for c in cells if (c.method, c.size) == (cell.method, cell.size)]
        if len(same) < len(per_seed):
            continue
        minus = None if cell.minus_reference is None else np.concatenate([c.minus_reference for c in same])
        out.append(Cell(cell.method, cell.size, np.concatenate([c.n_dev for c in same]),
                        np.concatenate([c.n_groups for c in same]),
                        {k: np.concatenate([c.values[k] for c in same]) for k in SCORES}, minus,
                        max(c.n_distinct for c in same),
                        {k: float(np.mean([c.uncalibrated[k] for c in same])) for k in SCORES}))
    return out


def plot_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows of the dvc plot: one line per method (``system``) against the mean dev clips, and the uncalibrated line."""
    out = []
    for r in rows:
        out.append({"system": r["method"], "size": r["size"], "n_dev": round(r["n_dev_mean"], 3),
                    **{f"test_{k}{s}": r[f"test_{k}"][b] for k in SCORES for s, b in (("", "mean"), ("_lo", "lo"),
                                                                                      ("_hi", "hi"))},
                    "n_repeats": r["n_repeats"]})
    seen = {}
    for r in rows:
        seen.setdefault(r["size"], r)
    for size, r in seen.items():
        out.append({"system": "uncalibrated", "size": size, "n_dev": round(r["n_dev_mean"], 3),
                    **{f"test_{k}{s}": r[f"uncalibrated_{k}"] if s == "" else None
                       for k in SCORES for s in ("", "_lo", "_hi")}, "n_repeats": 1})
    return out


def _fmt(block: dict | None) -> str:
    """``mean [lo, hi]`` with an interval; ``mean (min to max)`` with too few values for one."""
    if block is None:
        return ""
    mean, lo, hi = block["mean"], block["lo"], block["hi"]
    if lo is not None:
        return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{mean:.3f}" + (f" ({block['min']:.3f} to {block['max']:.3f})" if block["min"] != block["max"] else "")


def table_text(rows: Sequence[dict], not_drawn: dict[str, str], *, n_seeds: int, repeats: int, ci: float) -> str:
    """The learning curve as a text table (seeds pooled)."""
    level = f"{100 * ci:g}%"
    first = rows[0] if rows else None
    head = [f"How much dev data each calibration method needs: every method refitted on random dev subsets of whole "
            f"groups ({repeats} per size; {ALL_DEV} = the full-dev fit), each fit scored on the full test set.",
            f"Mean over {n_seeds} seed(s) x repeats [{level} percentile interval over the seeds' repeats pooled: "
            f"which dev subset you happen to have and which seed trained the model; for {ALL_DEV}, one fit per seed, "
            f"so over the seeds alone], or (min to max) where they take fewer than {MIN_DISTINCT} distinct values, "
            "too few for an interval; n_dev, groups: clips and groups per subset (mean); subsets: the most distinct "
            "subsets any one seed drew. NLL - temperature: paired on the same subset and seed; lower: the share of "
            "draws (seeds x repeats; a subset drawn twice counts twice) where the method's test NLL is lower. "
            "contextual and batch use no dev labels (flat by construction)."]
    if first:
        head.append(f"Uncalibrated (mean over seeds): test NLL {first['uncalibrated_nll']:.3f}, "
                    f"smooth ECE {first['uncalibrated_ece_smooth']:.3f}.")
    cols = f"{'size':>5} {'n_dev':>6} {'groups':>6} {'subsets':>7}  {'method':<12}{'test NLL':<24}{'smooth ECE':<24}" \
           f"{'NLL - temperature':<24}{'lower':>6}"
    lines = [*head, "", cols, "-" * len(cols)]
    for r in rows:
        minus = r.get("nll_minus_temperature")
        lines.append(f"{str(r['size']):>5} {r['n_dev_mean']:>6.1f} {r['n_groups_mean']:>6.1f} {r['n_distinct_subsets']:>7}  "
                     f"{r['method']:<12}{_fmt(r['test_nll']):<24}{_fmt(r['test_ece_smooth']):<24}{_fmt(minus):<24}"
                     + (f"{100 * minus['share_lower']:>5.0f}%" if minus else ""))
    for size, reason in not_drawn.items():
        lines.append(f"{size:>5}  {reason}")
    return "\n".join(lines) + "\n"


def plot_png(path, rows: Sequence[dict], *, title: str) -> None:
    """Two panels (test NLL, smooth ECE) against mean dev clips (log x): a line per method, with its interval band, or
    a dotted range where the values are too few for an interval (:func:`_interval`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only the stage draws
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.8), dpi=90)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.08, right=0.8, bottom=0.14, top=0.86, wspace=0.28)
    axes = fig.subplots(1, 2)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for ax, (key, label) in zip(axes, (("nll", "test NLL (nats)"), ("ece_smooth", "test smooth ECE"))):
        for m in methods:
            r = [row for row in rows if row["method"] == m]
            x = [row["n_dev_mean"] for row in r]
            line = ax.plot(x, [row[f"test_{key}"]["mean"] for row in r], marker="o", lw=1.4, label=m)[0]
            band = [(xi, row[f"test_{key}"]["lo"], row[f"test_{key}"]["hi"]) for xi, row in zip(x, r)
                    if row[f"test_{key}"]["lo"] is not None]
            if band:
                bx, lo, hi = zip(*band)
                ax.fill_between(bx, lo, hi, color=line.get_color(), alpha=0.12, lw=0)
            few = [(xi, row[f"test_{key}"]["min"], row[f"test_{key}"]["max"]) for xi, row in zip(x, r)
                   if row[f"test_{key}"]["lo"] is None and "min" in row[f"test_{key}"]]
            if few:
                fx, lo, hi = zip(*few)
                ax.vlines(fx, lo, hi, color=line.get_color(), lw=0.9, ls=":")
        if rows:
            ax.axhline(rows[0][f"uncalibrated_{key}"], color="0.3", ls="--", lw=1, label="uncalibrated")
        ax.set_xscale("log")
        ticks = sorted({round(r["n_dev_mean"], 1) for r in rows})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("dev clips the calibrator was fitted on")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=10)
    fig.text(0.01, 0.01, f"bands: percentile intervals; dotted: min to max, where fewer than {MIN_DISTINCT} distinct values "
             "allow no interval", fontsize=7, color="0.3")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# ------------------------------------------------------------------------------------------- stage
def run_learning_curve(p: Params) -> dict:
    """The ``learning_curve`` stage: every seed's dev/test predictions in, the JSON, table and plots out.

    Reads ``seeds``, ``learning_curve``, ``calibration.temperature_bounds`` and ``evaluate.ci``. A seed without
    ``dev_content_free.csv`` is a :class:`~speech_calibration.errors.UserError` naming the file.
    """
    cfg, ci = p.learning_curve, p.evaluate.ci
    per_seed, result = [], {"sizes": list(cfg.sizes), "repeats": cfg.repeats, "seed": cfg.seed, "ci": ci,
                            "methods": list(CURVE_METHODS), "per_seed": {}}
    not_drawn: dict[str, str] = {}
    for seed in p.seeds:
        files = layout.seed_files(seed)
        dev = Split.from_frame(schema.read_predictions(files.predictions("dev")))
        test = Split.from_frame(schema.read_predictions(files.predictions("test")))
        content_free = schema.read_content_free(files.content_free("dev"))
        if content_free is None:  # predict writes it for every seed: missing means deleted or a stale predict
            raise UserError(f"{files.content_free('dev')}: file not found; the learning curve fits contextual, which "
                            f"needs the content-free logits the predict stage writes (re-run it: dvc repro "
                            f"predict@{seed})")
        cells, skipped = system_curve(dev, test, sizes=cfg.sizes, repeats=cfg.repeats, seed=cfg.seed,
                                      temperature_bounds=p.calibration.temperature_bounds, content_free=content_free)
        per_seed.append(cells)
        not_drawn.update(skipped)
        result["per_seed"][files.system] = {"n_dev": int(dev.y.size), "n_dev_groups": int(len(set(dev.groups))),
                                            "n_test": int(test.y.size), "not_drawn": skipped,
                                            "rows": [summarise(c, ci) for c in cells]}
        log.info("%s: learning curve over %d dev clips (%d groups)", files.system, dev.y.size, len(set(dev.groups)))
    rows = [summarise(c, ci) for c in pool(per_seed)]
    result["pooled"] = {"n_seeds": len(per_seed), "rows": rows, "not_drawn": not_drawn}
    write_json(layout.LEARNING_CURVE_JSON, result)
    text = table_text(rows, not_drawn, n_seeds=len(per_seed), repeats=cfg.repeats, ci=ci)
    write_text(layout.LEARNING_CURVE_TXT, text)
    import pandas as pd

    write_csv(layout.LEARNING_CURVE_CSV, pd.DataFrame(plot_rows(rows)))
    plot_png(layout.LEARNING_CURVE_PNG, rows, title=f"Calibration vs dev size ({len(per_seed)} seeds pooled, "
                                                    f"{cfg.repeats} group-wise subsets per size)")
    for line in text.splitlines():
        log.info("%s", line)
    return result
