"""Analysis of sweep results: accuracy vs shots, bootstrap CIs, log2(k) fits, families, plots.

Accuracy at a shot count is the mean exact match over all scored (function, prompt set, query)
rows. Confidence intervals come from a *cluster* bootstrap over functions: prompts of one
function are correlated (same rule), so resampling individual rows would make the intervals too
narrow. The log-linear trend is an ordinary least-squares fit of mean accuracy against log2(k)
(:func:`fit_log2`), reported with its slope (accuracy points per doubling of k) and R^2.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paperlab.errors import ICLError

METRICS = ("greedy", "constrained", "bit_accuracy", "mode", "random")


@dataclass(frozen=True)
class CurvePoint:
    """Mean of one metric at one shot count, with its bootstrap interval."""

    shots: int
    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class LogFit:
    """accuracy ~ intercept + slope * log2(k)."""

    slope: float
    intercept: float
    r2: float
    n_points: int


def ok_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that were scored (not skipped)."""
    return [r for r in rows if r["status"] == "ok"]


def bootstrap_ci(
    groups: Sequence[Sequence[float]], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of all values and a percentile CI from resampling whole groups with replacement.

    Args:
        groups: values clustered by group (here: by function).
    Returns:
        (mean, low, high).
    Raises:
        ICLError: no values.
    """
    groups = [list(map(float, g)) for g in groups if len(g)]
    if not groups:
        raise ICLError("no scored rows to average; did every shot count exceed the context?")
    sums = np.array([sum(g) for g in groups])
    counts = np.array([len(g) for g in groups])
    mean = float(sums.sum() / counts.sum())
    if n_boot < 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    boots = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return mean, float(low), float(high)


def curve(rows: Sequence[dict[str, Any]], metric: str, n_boot: int = 1000) -> list[CurvePoint]:
    """Mean ``metric`` per shot count (rows of one model/encoding), with cluster-bootstrap CIs."""
    if metric not in METRICS:
        raise ICLError(f"unknown metric {metric!r}; choose from: {', '.join(METRICS)}")
    by_k: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in ok_rows(rows):
        by_k[int(r["shots"])][r["function"]].append(float(r[metric]))
    points = []
    for k in sorted(by_k):
        groups = list(by_k[k].values())
        mean, low, high = bootstrap_ci(groups, n_boot=n_boot)
        points.append(CurvePoint(k, mean, low, high, sum(len(g) for g in groups)))
    return points


def fit_log2(shots: Sequence[int], values: Sequence[float]) -> LogFit:
    """Least-squares fit of ``values`` against log2(shots).

    Raises:
        ICLError: fewer than two distinct shot counts.
    """
    from scipy.stats import linregress

    if len(set(shots)) < 2:
        raise ICLError("a log2(k) fit needs at least two distinct shot counts")
    x = np.log2(np.asarray(shots, dtype=float))
    y = np.asarray(values, dtype=float)
    if np.allclose(y, y[0]):
        return LogFit(0.0, float(y[0]), 0.0, len(y))  # flat: R^2 is undefined, report 0
    res = linregress(x, y)
    return LogFit(float(res.slope), float(res.intercept), float(res.rvalue**2), len(y))


def split_by(rows: Sequence[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    """Group rows by a column, keeping first-seen order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(str(r[key]), []).append(r)
    return out


def series_name(rows: Sequence[dict[str, Any]]) -> str:
    return f"{rows[0]['model']} ({rows[0]['encoding']})"


def summary_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """One row per (model, encoding, k): greedy/constrained/mode/random accuracy with CIs."""
    headers = ["model", "encoding", "shots", "n", "greedy [95% CI]", "constrained [95% CI]",
               "bit acc.", "mode", "random"]
    table = []
    for series in _series(rows).values():
        cols = {m: curve(series, m) for m in METRICS}
        for i, p in enumerate(cols["greedy"]):
            c = cols["constrained"][i]
            table.append([series[0]["model"], series[0]["encoding"], p.shots, p.n,
                          f"{p.mean:.3f} [{p.low:.3f}, {p.high:.3f}]",
                          f"{c.mean:.3f} [{c.low:.3f}, {c.high:.3f}]",
                          f"{cols['bit_accuracy'][i].mean:.3f}", f"{cols['mode'][i].mean:.3f}",
                          f"{cols['random'][i].mean:.4f}"])
        skipped = sorted({int(r["shots"]) for r in series if r["status"] == "skipped"})
        for k in skipped:
            table.append([series[0]["model"], series[0]["encoding"], k, 0, "skipped (context)",
                          "", "", "", ""])
    return headers, table


def _series(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(f"{r['model']}|{r['encoding']}", []).append(r)
    return out


def fit_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per (model, encoding, metric): the log2(k) fit over the scored shot counts."""
    headers = ["model", "encoding", "metric", "slope / doubling", "R^2", "points", "acc. at min k",
               "acc. at max k"]
    table = []
    for series in _series(rows).values():
        for metric in ("greedy", "constrained", "mode"):
            pts = curve(series, metric, n_boot=200)
            if len(pts) < 2:
                continue
            f = fit_log2([p.shots for p in pts], [p.mean for p in pts])
            table.append([series[0]["model"], series[0]["encoding"], metric, round(f.slope, 4),
                          round(f.r2, 3), f.n_points, round(pts[0].mean, 3), round(pts[-1].mean, 3)])
    return headers, table


def family_table(rows: Sequence[dict[str, Any]], metric: str = "constrained") -> tuple[list[str], list[list[Any]]]:
    """Per (model, family): accuracy at the smallest and largest scored k, the gain over the mode
    baseline at the largest k, and the log2(k) slope: which families each model learns in context."""
    headers = ["model", "family", "functions", f"{metric} @ min k", f"{metric} @ max k",
               "mode @ max k", "gain over mode", "slope / doubling", "R^2"]
    table = []
    for series in _series(rows).values():
        for fam, frows in sorted(split_by(ok_rows(series), "family").items()):
            pts = curve(frows, metric, n_boot=200)
            mode = curve(frows, "mode", n_boot=200)
            f = fit_log2([p.shots for p in pts], [p.mean for p in pts]) if len(pts) > 1 else None
            table.append([series[0]["model"], fam, len({r["function"] for r in frows}),
                          round(pts[0].mean, 3), round(pts[-1].mean, 3), round(mode[-1].mean, 3),
                          round(pts[-1].mean - mode[-1].mean, 3),
                          round(f.slope, 4) if f else "", round(f.r2, 3) if f else ""])
    return headers, table


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render a table as GitHub markdown."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# The curves' line styles, and the words a caption uses for them: one table for both, so a
# figure's caption always describes its legend.
CURVE_STYLES: tuple[tuple[str, str, str], ...] = (
    ("greedy", "-o", "greedy decoding (solid, circles)"),
    ("constrained", "--s", "constrained to the answer alphabet (dashed, squares)"),
    ("mode", ":", "mode baseline (dotted)"),
)


def curves_caption() -> str:
    """The caption of :func:`plot_curves`'s figure."""
    styles = ", ".join(words for _, _, words in CURVE_STYLES)
    return (f"exact match vs shots, one colour per model: {styles}; shaded bands are 95% bootstrap CIs; "
            "the grey line is random guessing (1/256)")


def families_caption(metric: str = "constrained") -> str:
    """The caption of :func:`plot_families`'s figure."""
    return (f"per task family: {metric} exact match vs shots, one colour per model (solid), with each "
            "model's mode baseline (dotted)")


def plot_curves(rows: Sequence[dict[str, Any]], path: Path, title: str = "ICL: exact match vs shots") -> Path:
    """Accuracy vs k (log2 axis) per model: greedy and constrained with CI bands, the mode
    baseline dotted and the random baseline (1/256) as a grey line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paperlab.io.atomic import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, series in enumerate(_series(rows).values()):
        color = colors[i % len(colors)]
        for metric, style, _ in CURVE_STYLES:
            pts = curve(series, metric, n_boot=500 if metric != "mode" else 200)
            if not pts:
                continue
            ks = [p.shots for p in pts]
            ax.plot(ks, [p.mean for p in pts], style, color=color, ms=4,
                    label=f"{series_name(series)} {metric}")
            if metric != "mode":
                ax.fill_between(ks, [p.low for p in pts], [p.high for p in pts], color=color, alpha=0.12)
    ax.axhline(1 / 256, color="grey", lw=0.8, label="random (1/256)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shots k (log2 scale)")
    ax.set_ylabel("exact match")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, atomic_write_bytes)


def plot_families(rows: Sequence[dict[str, Any]], path: Path, metric: str = "constrained") -> Path:
    """One panel per task family: accuracy vs k per model (and the mode baseline, dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paperlab.io.atomic import atomic_write_bytes

    fams = sorted({r["family"] for r in ok_rows(rows)})
    if not fams:
        raise ICLError("no scored rows to plot")
    ncol = min(4, len(fams))
    nrow = math.ceil(len(fams) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, fam in zip(axes.flat, fams, strict=False):
        for i, series in enumerate(_series(rows).values()):
            frows = [r for r in ok_rows(series) if r["family"] == fam]
            if not frows:
                continue
            for m, style in ((metric, "-o"), ("mode", ":")):
                pts = curve(frows, m, n_boot=200)
                ax.plot([p.shots for p in pts], [p.mean for p in pts], style, ms=3,
                        color=colors[i % len(colors)],
                        label=f"{series_name(series)}" + (" mode" if m == "mode" else ""))
        ax.set_xscale("log", base=2)
        ax.set_title(fam, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(fams):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.supxlabel("shots k (log2)")
    fig.supylabel(f"{metric} exact match")
    fig.tight_layout()
    return _save(fig, path, atomic_write_bytes)


def _save(fig: Any, path: Path, writer: Any) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return writer(path, buf.getvalue())
