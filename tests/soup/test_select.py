"""Score tables and SoCE selection on hand-made tables with known answers, and on real BFCL."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from paperlab.soup.errors import ScoresError
from paperlab.soup.scores import load_scores
from paperlab.soup.select import pearson, plot_heatmap, select_experts


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def wide(tmp_path: Path) -> Path:
    # a and b move together (rho = 1); c is anti-correlated with both over m1..m3? no: built below
    return write(tmp_path / "s.csv", "model,a,b,c\nm1,10,20,30\nm2,20,40,10\nm3,30,60,20\n")


def test_wide_csv_known_answer(wide: Path) -> None:
    t = load_scores(wide)
    assert t.models == ["m1", "m2", "m3"] and t.categories == ["a", "b", "c"]
    sel = select_experts(t, tau=0.5)
    assert sel.corr[0][1] == pytest.approx(1.0)
    assert sel.corr[0][2] == pytest.approx(-0.5)  # a: 10,20,30  c: 30,10,20
    # |rho(a,c)| = 0.5 is not < 0.5, so with tau 0.5 nothing is in L ...
    assert sel.low_corr == []
    # ... and with tau 0.6, a, b and c all are, each with its best model; m3 wins a and b.
    sel = select_experts(t, tau=0.6)
    assert sel.low_corr == ["a", "b", "c"]
    assert sel.expert_of == {"a": "m3", "b": "m3", "c": "m1"}
    assert sel.experts == ["m3", "m1"]  # deduplicated, in category order
    assert any("expert for c: m1" in r for r in sel.reasons)


def test_long_csv_and_json_layouts_agree(tmp_path: Path, wide: Path) -> None:
    t = load_scores(wide)
    long_csv = write(tmp_path / "l.csv", "model,category,score\n" + "".join(
        f"{m},{c},{t.scores[m][c]}\n" for m in t.models for c in t.categories))
    wide_json = write(tmp_path / "w.json", json.dumps(t.to_dict()))
    long_json = write(tmp_path / "l.json", json.dumps(
        [{"model": m, "category": c, "score": t.scores[m][c]} for m in t.models for c in t.categories]))
    for p in (long_csv, wide_json, long_json):
        u = load_scores(p)
        assert u.models == t.models and u.categories == t.categories and u.scores == t.scores


def test_ties_go_to_the_stronger_all_rounder_and_constant_category_is_left_out(tmp_path: Path) -> None:
    p = write(tmp_path / "s.csv", "model,a,b,flat\nm1,50,1,7\nm2,50,3,7\nm3,10,2,7\n")
    sel = select_experts(load_scores(p), tau=0.9)
    assert "flat" not in sel.low_corr
    assert any("flat: every candidate scores the same" in r for r in sel.reasons)
    assert sel.expert_of["a"] == "m2" and any("tie, broken by the higher mean" in r for r in sel.reasons)
    p = write(tmp_path / "t.csv", "model,a,b\nm1,50,1\nm2,50,1\nm3,10,3\nm4,30,0\n")
    assert select_experts(load_scores(p), tau=0.9).expert_of["a"] == "m1"  # full tie: first listed


def test_pearson_matches_scipy() -> None:
    from scipy.stats import pearsonr

    x, y = [1.0, 2.5, 3.0, 7.0], [2.0, 1.0, 4.0, 3.5]
    assert pearson(x, y) == pytest.approx(pearsonr(x, y).statistic)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


@pytest.mark.parametrize("text,match", [
    ("model,a,b\nm1,1,2\nm1,3,4\n", "duplicate model 'm1'"),
    ("model,a,b\nm1,1,oops\nm2,3,4\n", r"non-numeric score 'oops' at .*row 2, column 'b'"),
    ("name_of_thing,a\nm1,1\n", "no model column"),
])
def test_bad_tables(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ScoresError, match=match):
        load_scores(write(tmp_path / "s.csv", text))


def test_missing_values_and_unknown_models(tmp_path: Path) -> None:
    t = load_scores(write(tmp_path / "s.csv", "model,a,b\nalpha,1,N/A\nbeta,3,4\ngamma,5,6\n"))
    with pytest.raises(ScoresError, match="missing score for model 'alpha' in category 'b'"):
        t.select(["alpha", "beta"], missing="error")
    with pytest.raises(ScoresError, match="only 1 model.*left"):  # the default drops alpha
        t.select(["alpha", "beta"])
    assert t.select(["alpha", "beta"], ["a"]).categories == ["a"]
    with pytest.raises(ScoresError, match="unknown model 'betta'.*did you mean 'beta'"):
        t.select(["betta"])
    assert t.select(["*a"], ["a"]).models == ["alpha", "beta", "gamma"]
    with pytest.raises(ScoresError, match="unknown category 'zz'"):
        t.select(None, ["zz"])


@pytest.mark.slow
@pytest.mark.needs_shared
def test_real_bfcl_file(shared_data: Path, tmp_path: Path) -> None:
    t = load_scores(shared_data / "bfcl" / "bfcl_v3_2025-06-14_overall.csv")
    assert len(t.models) == 109
    assert "Live Acc" not in t.categories and t.groups["xLAM-2-70b-fc-r (FC)"]["Overall Acc"] == 78.45
    assert "Irrelevance Detection" in t.categories and "Rank" not in t.categories
    sub = t.select(["xLAM-2-70b-fc-r", "CoALM-70B", "watt-tool-70B", "functionary-medium-v3.1"])
    assert sub.models[0] == "xLAM-2-70b-fc-r (FC)" and sub.scores["CoALM-70B"]["Multi Turn Base"] == 7.5
    sel = select_experts(sub)
    assert sel.expert_of["Multi Turn Base"] == "xLAM-2-70b-fc-r (FC)"
    png = plot_heatmap(sel, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_correlation_step_that_filters_nothing_says_so_and_suggests_a_tau(tmp_path: Path) -> None:
    import random

    rng = random.Random(3)
    rows = ["model," + ",".join(f"c{i}" for i in range(6))]
    rows += [f"m{j}," + ",".join(str(rng.uniform(0, 100)) for _ in range(6)) for j in range(8)]
    table = load_scores(write(tmp_path / "s.csv", "\n".join(rows) + "\n"))
    sel = select_experts(table, tau=0.99)
    assert len(sel.low_corr) == 6
    notice = next(n for n in sel.notices if "filters nothing" in n)
    tau = float(notice.split("--tau ")[1].split()[0])
    assert 0 < len(select_experts(table, tau=tau).low_corr) < 6  # the suggestion does filter
    assert not any("filters nothing" in n for n in select_experts(table, tau=tau).notices)


def test_degenerate_expert_is_flagged_and_a_floor_replaces_it(tmp_path: Path) -> None:
    # "never calls a function": 100 on irrelevance, near zero elsewhere (BFCL v4's Irrelevance case)
    text = ("model,simple,multiple,parallel,irrelevance\nlazy,2,1,0,100\ngood,90,60,85,70\nok,70,80,40,75\n"
            "mid,60,50,70,60\n")
    table = load_scores(write(tmp_path / "s.csv", text))
    sel = select_experts(table, tau=0.9)
    assert sel.expert_of["irrelevance"] == "lazy"
    notice = next(n for n in sel.notices if "degenerate" in n)
    assert "lazy" in notice and "irrelevance" in notice and "--expert-floor" in notice and len(notice) < 300
    floor = float(notice.split("--expert-floor ")[1].split()[0])
    floored = select_experts(table, tau=0.9, floor=floor)
    assert "lazy" not in floored.experts and floored.expert_of["irrelevance"] == "ok"
    assert not any("degenerate" in n for n in floored.notices)
    with pytest.raises(ScoresError, match="lower --expert-floor"):
        select_experts(table, tau=0.9, floor=99)
