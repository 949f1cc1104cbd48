"""The sweep loop, CSV round trip, baselines, bootstrap, the log2 fit, tables and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from paperlab.errors import ICLError
from paperlab.icl.analysis import (
    bootstrap_ci,
    curve,
    family_table,
    fit_log2,
    fit_table,
    markdown_table,
    plot_curves,
    plot_families,
    summary_table,
)
from paperlab.icl.encodings import get_encoding
from paperlab.icl.prompts import PromptSet
from paperlab.icl.scoring import QueryScore
from paperlab.icl.sweep import FIELDS, read_csv, run_sweep, write_csv
from paperlab.icl.tasks import generate_functions


class OracleScorer:
    """A scorer standing in for a model: right from ``k >= threshold`` on, else wrong."""

    def __init__(self, context: int | None, threshold: int) -> None:
        self.context, self.threshold, self.calls = context, threshold, []

    def score_set(self, ps: PromptSet, shots: list[int]) -> list[QueryScore]:
        self.calls.append(list(shots))
        ok = [k >= self.threshold for k in shots]
        return [QueryScore(k, qi, o, o, 1.0 if o else 0.5) for k, o in zip(shots, ok, strict=True)
                for qi in range(len(ps.queries))]


def _rows(context: int | None = 200, model: str = "oracle") -> list[dict[str, Any]]:
    return run_sweep(OracleScorer(context, threshold=4), generate_functions(40), get_encoding("digit"),
                     [1, 2, 4, 8, 16], model_name=model, n_prompts=2, n_queries=2, seed=0)


def test_sweep_rows_skips_and_baselines() -> None:
    sc = OracleScorer(200, threshold=4)
    rows = run_sweep(sc, generate_functions(40), get_encoding("digit"), [1, 2, 4, 8, 16],
                     model_name="oracle", n_prompts=2, n_queries=2)
    assert len(rows) == 40 * 2 * 5 * 2
    assert all(c == [1, 2, 4, 8] for c in sc.calls)  # 16 shots = 305 symbols > 200: never scored
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert {r["shots"] for r in skipped} == {16} and all(r["greedy"] == "" for r in skipped)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["greedy"] == int(r["shots"] >= 4) for r in ok)
    # broadcast functions (parity, majority, ...) have only two outputs: the mode baseline hits often
    mode_hits = np.mean([r["mode"] for r in ok if r["function"] in ("parity", "majority")])
    assert mode_hits > 0.3
    assert np.mean([r["random"] for r in ok]) < 0.05
    assert set(rows[0]) == set(FIELDS)


def test_csv_round_trip_and_errors(tmp_path: Path) -> None:
    rows = _rows()
    p = write_csv(rows, tmp_path / "r.csv")
    back = read_csv(p)
    assert len(back) == len(rows) and back[0]["function"] == rows[0]["function"]
    assert curve(back, "greedy")[-1].mean == 1.0
    with pytest.raises(ICLError, match="icl run"):
        read_csv(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ICLError, match="missing columns"):
        read_csv(tmp_path / "bad.csv")


def test_bootstrap_ci() -> None:
    assert bootstrap_ci([[1, 1], [1]]) == (1.0, 1.0, 1.0)
    mean, low, high = bootstrap_ci([[1, 1, 1, 1], [0, 0, 0, 0]] * 10, n_boot=2000)
    assert mean == 0.5 and 0.2 <= low < 0.5 < high <= 0.8
    # clustering: 20 groups of identical values give a wider CI than 80 independent values
    _, lo_c, hi_c = bootstrap_ci([[v] * 4 for v in [0, 1] * 10], n_boot=2000)
    _, lo_i, hi_i = bootstrap_ci([[v] for v in [0, 1] * 40], n_boot=2000)
    assert hi_c - lo_c > hi_i - lo_i
    with pytest.raises(ICLError):
        bootstrap_ci([])


def test_fit_log2_recovers_a_line() -> None:
    ks = [1, 2, 4, 8, 16, 32]
    f = fit_log2(ks, [0.1 + 0.05 * np.log2(k) for k in ks])
    assert f.slope == pytest.approx(0.05) and f.intercept == pytest.approx(0.1)
    assert f.r2 == pytest.approx(1.0)
    noisy = fit_log2(ks, [0.2, 0.1, 0.3, 0.05, 0.25, 0.1])
    assert noisy.r2 < 0.3
    flat = fit_log2(ks, [0.3] * 6)
    assert flat.slope == 0 and flat.r2 == 0
    with pytest.raises(ICLError):
        fit_log2([4, 4], [0.1, 0.2])


def test_tables_and_plots(tmp_path: Path) -> None:
    rows = _rows() + _rows(context=None, model="oracle-long")
    h, t = summary_table(rows)
    assert any("skipped" in str(c) for r in t for c in r)
    h2, t2 = fit_table(rows)
    greedy = [r for r in t2 if r[0] == "oracle" and r[2] == "greedy"][0]
    assert greedy[3] > 0  # accuracy rises with k
    h3, t3 = family_table(rows)
    assert {r[1] for r in t3} >= {"bitwise", "composition"}
    assert markdown_table(h, t).count("\n") == len(t) + 1
    for path in (plot_curves(rows, tmp_path / "c.png"), plot_families(rows, tmp_path / "f.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_curves_caption_describes_every_line_of_the_legend(tmp_path: Path) -> None:
    """The demo's caption once named three line styles while the figure also drew a random
    baseline and CI bands; caption and legend now come from one table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paperlab.icl.analysis import CURVE_STYLES, curves_caption

    rows = _rows()
    captured: list[list[str]] = []
    real_savefig = plt.Figure.savefig

    def spy(fig: plt.Figure, *a: object, **k: object) -> None:
        captured.append([t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()])
        real_savefig(fig, *a, **k)

    plt.Figure.savefig = spy  # type: ignore[method-assign]
    try:
        plot_curves(rows, tmp_path / "c.png")
    finally:
        plt.Figure.savefig = real_savefig  # type: ignore[method-assign]
    labels = captured[0]
    caption = curves_caption()
    for metric, _, words in CURVE_STYLES:
        if any(lbl.endswith(metric) for lbl in labels):
            assert words in caption
    assert any("random" in lbl for lbl in labels) and "random guessing (1/256)" in caption
    assert "95% bootstrap CIs" in caption
