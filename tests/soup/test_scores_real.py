"""Score tables as users bring them: real BFCL snapshots, a v4-shaped file, hand-made tables with holes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from paperlab.soup.errors import ScoresError
from paperlab.soup.scores import load_scores
from paperlab.soup.select import select_experts

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PAPERLAB_SHARED", REPO / ".." / "shared")) / "data" / "bfcl"
V4 = Path(__file__).parent / "fixtures" / "bfcl_v4_sample.csv"
REAL = sorted(SHARED.glob("*.csv")) if SHARED.is_dir() else []


@pytest.mark.needs_shared
@pytest.mark.skipif(not REAL, reason="../shared/data/bfcl holds no BFCL csv")
@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_real_bfcl_snapshot(path: Path) -> None:
    table = load_scores(path)
    meta = [c for c in table.categories if "Cost" in c or "Latency" in c or c in ("Rank", "Organization", "License")]
    assert meta == []
    assert not any(c.endswith("Acc") for c in table.categories)
    assert "Overall Acc" in table.groups[table.models[0]]
    chosen = table.select()
    sel = select_experts(chosen)
    assert len(sel.models) >= 2 and sel.experts
    assert "BFCL" in chosen.notes[0]


def test_v4_columns_cost_is_never_an_expert_and_lower_is_better_is_excluded() -> None:
    table = load_scores(V4)
    assert "Total Cost ($)" not in table.categories
    assert not any(c.startswith("Format Sensitivity") for c in table.categories)
    assert {"Web Search Base", "Memory KV"} <= set(table.categories)
    assert {"Web Search Acc", "Memory Acc", "Overall Acc"} <= set(table.groups[table.models[0]])
    assert any("BFCL v4" in n for n in table.notes)
    assert any("excluded lower-is-better" in n and "Format Sensitivity Max Delta" in n for n in table.notes)
    flipped = load_scores(V4, lower_is_better="flip")
    beta = flipped.scores["Beta-8B (Prompt)"]["Format Sensitivity Max Delta"]
    assert beta < 0  # 51.35 points of swing become -51.35: higher is better again


def test_missing_policies_on_na_blank_and_dash() -> None:
    table = load_scores(V4)
    chosen = table.select()  # default: drop-models
    assert "Eta-7B (FC)" not in chosen.models  # N/A on every agentic category
    assert "Theta-1B (Prompt)" not in chosen.models  # a blank cell
    assert "Zeta-405B (FC)" not in chosen.models  # a "-" cell
    note = next(n for n in chosen.notes if n.startswith("dropped 3 model(s)"))
    assert "Eta-7B (FC)" in note and "Theta-1B (Prompt)" in note
    assert all(len(n) < 300 for n in chosen.notes)  # notices stay a line or two
    by_cat = table.select(missing="drop-categories")
    assert len(by_cat.models) == 8
    assert "Memory KV" not in by_cat.categories and "Multi Turn Long Context" not in by_cat.categories
    with pytest.raises(ScoresError, match="missing score for model 'Zeta-405B \\(FC\\)'.*--missing drop-models"):
        table.select(missing="error")
    trimmed = table.select(exclude_models=["eta-*", "theta*", "Zeta*"], missing="error")
    assert len(trimmed.models) == 5
    no_mem = table.select(exclude_categories=["Memory *", "Web Search *", "Multi Turn Long Context"], missing="error")
    assert len(no_mem.models) == 8


def test_hand_made_table_with_holes(tmp_path: Path) -> None:
    f = tmp_path / "scores.csv"
    f.write_text("model,math,code,chat\na,1,2,3\nb,N/A,3,1\nc,2,,2\nd,3,1,-\ne,4,5,0\n")
    t = load_scores(f)
    assert t.select().models == ["a", "e"]
    with pytest.raises(ScoresError, match="no category left"):
        t.select(missing="drop-categories")
    with pytest.raises(ScoresError, match="unknown missing-value policy"):
        t.select(missing="ignore")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "paperlab", "soup", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_analyze_piped_keeps_the_whole_table_and_names_what_it_dropped(soup_cli) -> None:  # type: ignore[no-untyped-def]
    run_cli = soup_cli
    r = run_cli("analyze", str(V4))
    assert r.returncode == 0, r.stderr
    assert "dropped 3 model(s) with missing scores" in r.stderr
    assert "…" not in r.stdout  # nothing cut to 80 columns when piped
    assert "Web Search No Snippet" in r.stdout
    r = run_cli("analyze", str(V4), "--missing", "error")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error: missing score")
