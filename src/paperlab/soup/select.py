"""SoCE steps 1-2: category correlations, the low-correlation set L, one expert per category.

Choices where the paper is silent (documented in docs/soup.md):
- tau defaults to :data:`DEFAULT_TAU` = 0.5: a pair of categories whose scores across the
  candidates correlate with |rho| < 0.5 shares less than 25% of its variance, i.e. the
  categories reward visibly different abilities.
- A category whose scores are equal for every candidate has no defined correlation; it is
  reported and never enters L (it cannot tell the candidates apart).
- Ties for the best score go to the tied candidate with the higher mean over all chosen
  categories (the stronger all-rounder), then to the one listed first; the report says so.
- Two short notices guard against misleading selections on real leaderboards: when every
  category lands in L the correlation step filtered nothing (a tau that keeps about half is
  suggested), and an expert whose mean over all categories is under half the candidates'
  median mean is flagged as degenerate (e.g. a model that wins "irrelevance" by never calling a
  function); ``floor`` (a minimum mean for experts) then picks the best candidate above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paperlab.soup.errors import ScoresError
from paperlab.soup.scores import ScoreTable, short_list

DEFAULT_TAU = 0.5


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson's rho of two equally long lists; NaN when either is constant."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    dx, dy = [a - mx for a in x], [b - my for b in y]
    sxx, syy = sum(a * a for a in dx), sum(b * b for b in dy)
    if sxx == 0 or syy == 0:
        return math.nan
    return sum(a * b for a, b in zip(dx, dy, strict=True)) / math.sqrt(sxx * syy)


def correlation_matrix(table: ScoreTable) -> list[list[float]]:
    """Pearson correlation between every pair of categories, over the table's models."""
    cols = [[table.scores[m][c] for m in table.models] for c in table.categories]
    return [[pearson(a, b) for b in cols] for a in cols]


@dataclass
class Selection:
    """The outcome of SoCE selection, with the reasons for each choice."""

    tau: float
    models: list[str]
    categories: list[str]
    corr: list[list[float]]
    low_corr: list[str]
    expert_of: dict[str, str]
    experts: list[str]
    reasons: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # at most a line each, for the user's attention

    def to_dict(self) -> dict[str, Any]:
        return {
            "tau": self.tau,
            "models": self.models,
            "categories": self.categories,
            "correlation": [[None if math.isnan(v) else round(v, 4) for v in row] for row in self.corr],
            "low_correlation_set": self.low_corr,
            "expert_of_category": self.expert_of,
            "experts": self.experts,
            "reasons": self.reasons,
            "notices": self.notices,
        }


def _suggest_tau(weakest: dict[str, float], tau: float) -> str:
    """The notice for a correlation step that filtered nothing, with a tau that keeps about half."""
    values = sorted(weakest.values())
    cut = round(values[len(values) // 2], 2)
    kept = sum(v < cut for v in values)
    return (f"every category is in L at tau = {tau}: the correlation step filters nothing; "
            f"--tau {cut:g} keeps {kept} of {len(values)}")


def select_experts(table: ScoreTable, tau: float = DEFAULT_TAU, *, floor: float | None = None) -> Selection:
    """Run SoCE selection on a (chosen) score table.

    Args:
        table: models x categories, no missing values (see :meth:`ScoreTable.select`).
        tau: a category enters L when |rho| < tau with at least one other category.
        floor: the lowest mean over all categories an expert may have (None: no floor; a
            degenerate expert is then only flagged).

    Raises:
        ScoresError: fewer than 2 models or categories, tau outside (0, 1], or a floor no
            candidate reaches.
    """
    if not 0 < tau <= 1:
        raise ScoresError(f"tau must be in (0, 1], got {tau}")
    if len(table.models) < 2:
        raise ScoresError("correlations need at least 2 candidate models; choose more models")
    if len(table.categories) < 2:
        raise ScoresError("correlations need at least 2 categories; choose more categories")
    cats = table.categories
    corr = correlation_matrix(table)
    reasons: list[str] = [f"{len(table.models)} candidates, {len(cats)} categories, tau = {tau}"]
    notices: list[str] = []
    low: list[str] = []
    weakest: dict[str, float] = {}
    for i, c in enumerate(cats):
        pairs = [(abs(corr[i][j]), cats[j]) for j in range(len(cats)) if j != i and not math.isnan(corr[i][j])]
        if math.isnan(corr[i][i]):
            reasons.append(f"{c}: every candidate scores the same; no correlation, left out of L")
            continue
        if not pairs:
            reasons.append(f"{c}: no defined correlation with another category; left out of L")
            continue
        r, other = min(pairs)
        weakest[c] = r
        if r < tau:
            low.append(c)
            reasons.append(f"{c}: in L, |rho| = {r:.2f} < {tau} with {other}")
        else:
            reasons.append(f"{c}: not in L, its weakest correlation is |rho| = {r:.2f} (with {other}) >= {tau}")
    if len(weakest) >= 3 and len(low) == len(weakest):
        notices.append(_suggest_tau(weakest, tau))
    expert_of: dict[str, str] = {}
    experts: list[str] = []
    mean = {m: sum(table.scores[m].values()) / len(cats) for m in table.models}
    eligible = list(table.models)
    if floor is not None:
        eligible = [m for m in table.models if mean[m] >= floor]
        if len(eligible) < 2:
            raise ScoresError(f"only {len(eligible)} candidate(s) have a mean of at least {floor:g} over all "
                              f"categories; lower --expert-floor (the best mean is {max(mean.values()):.1f})")
        reasons.append(f"expert floor {floor:g}: {len(table.models) - len(eligible)} candidate(s) below it cannot be experts")
    for c in low:
        # stable sort: equal score and equal mean keep the input order
        ranked = sorted(eligible, key=lambda m: (-table.scores[m][c], -mean[m]))
        best = ranked[0]
        expert_of[c] = best
        runner = ranked[1]
        tie = (
            f" (tie, broken by the higher mean over all categories: {mean[best]:.2f} vs {mean[runner]:.2f})"
            if table.scores[runner][c] == table.scores[best][c]
            else ""
        )
        reasons.append(
            f"expert for {c}: {best} ({table.scores[best][c]:.2f}; next {runner} {table.scores[runner][c]:.2f}){tie}"
        )
        if best not in experts:
            experts.append(best)
    if not low:
        reasons.append("L is empty: every category correlates strongly with all others; raise tau to find experts")
    else:
        reasons.append(f"experts (deduplicated): {', '.join(experts)}")
    median = sorted(mean.values())[len(mean) // 2]
    weak = [e for e in experts if mean[e] < 0.5 * median]
    if weak:
        won = [c for c in low if expert_of[c] in weak]
        notices.append(f"degenerate expert(s) {short_list(weak, 2)} (for {short_list(won, 2)}): a mean of "
                       f"{min(mean[e] for e in weak):.1f} over all categories against a median of {median:.1f}; "
                       f"--expert-floor {0.5 * median:.0f} picks the best candidate above it instead")
    return Selection(tau, list(table.models), list(cats), corr, low, expert_of, experts, reasons, notices)


def plot_heatmap(sel: Selection, path: str | Path, title: str = "Category correlation (Pearson)") -> Path:
    """Write a heatmap PNG of the correlation matrix; categories in L are starred and boxed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(sel.categories)
    size = max(4.5, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    data = [[math.nan if math.isnan(v) else v for v in row] for row in sel.corr]
    im = ax.imshow(data, cmap="RdBu_r", vmin=-1, vmax=1)
    labels = [f"* {c}" if c in sel.low_corr else c for c in sel.categories]
    ax.set_xticks(range(n), labels=labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=labels, fontsize=8)
    for i in range(n):
        for j in range(n):
            v = sel.corr[i][j]
            txt = "n/a" if math.isnan(v) else f"{v:.2f}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=7 if n > 8 else 9,
                    color="white" if not math.isnan(v) and abs(v) > 0.6 else "black")
            if (sel.categories[i] in sel.low_corr and sel.categories[j] in sel.low_corr and i != j
                    and not math.isnan(v) and abs(v) < sel.tau):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
    for lab in ax.get_xticklabels() + ax.get_yticklabels():
        if lab.get_text().startswith("* "):
            lab.set_fontweight("bold")
    ax.set_title(f"{title}\n* = in L (|rho| < {sel.tau} with some category); boxed pairs are below tau", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
