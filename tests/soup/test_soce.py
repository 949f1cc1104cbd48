"""A small zoo run end to end: zoo -> scores -> experts -> search -> soup that loads and generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
# Tests that use the small zoo train it first (seconds to a minute): the slow lane.
zoo_test = pytest.mark.slow


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from paperlab.soup.zoo.build import build_zoo, small_config

    return build_zoo(small_config(), tmp_path_factory.mktemp("cache"))


@zoo_test
def test_zoo_is_real_and_teacher_forcing_agrees_with_generation(small_zoo: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from paperlab.soup.evaluators import JsonlEvaluator, ZooEvaluator
    from paperlab.soup.zoo.build import zoo_candidates

    cands = zoo_candidates(small_zoo)
    assert len(cands) == 3
    model = AutoModelForCausalLM.from_pretrained(cands[0])
    tok = AutoTokenizer.from_pretrained(cands[0])
    gen = JsonlEvaluator(small_zoo / "val.jsonl", tok, max_new_tokens=24)
    outs = gen.generate(model, [it.prompt for it in gen.items])
    fast = ZooEvaluator(small_zoo / "val.jsonl").correct(model)
    # greedy decoding produces the answer exactly iff the teacher-forced argmax says so
    assert fast == [o == it.answer for o, it in zip(outs, gen.items, strict=False)]
    assert any(fast) and any(o.strip() for o in outs)
    val = {json.loads(x)["prompt"] for x in (small_zoo / "val.jsonl").read_text().splitlines()}
    test = {json.loads(x)["prompt"] for x in (small_zoo / "test.jsonl").read_text().splitlines()}
    assert not val & test  # held-out split


@zoo_test
def test_zoo_is_cached(small_zoo: Path) -> None:
    from paperlab.soup.zoo.build import build_zoo, small_config

    stamp = (small_zoo / "zoo.json").stat().st_mtime
    assert build_zoo(small_config(), small_zoo.parent) == small_zoo
    assert (small_zoo / "zoo.json").stat().st_mtime == stamp


@zoo_test
def test_soce_cli_end_to_end(small_zoo: Path, tmp_path: Path) -> None:
    from paperlab.soup.zoo.build import zoo_candidates

    cfg = tmp_path / "soce.yaml"
    cfg.write_text(yaml.safe_dump({
        "candidates": [str(p) for p in zoo_candidates(small_zoo)],
        "evaluator": f"zoo:{small_zoo / 'val.jsonl'}",
        "test_evaluator": f"zoo:{small_zoo / 'test.jsonl'}",
        "tau": 0.99, "search": "grid", "out": "run", "threads": 1,
    }))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    r = subprocess.run([sys.executable, "-m", "paperlab", "soup", "soce", str(cfg)], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "run"
    rec = yaml.safe_load((out / "soce.yaml").read_text())
    assert rec["tau"] == 0.99 and rec["experts"] and set(rec["weights"]) <= {p.name for p in zoo_candidates(small_zoo)}
    assert abs(sum(rec["weights"].values()) - 1) < 1e-9
    methods = [row["method"] for row in rec["table"]]
    assert methods[-4:] == ["uniform soup", "greedy soup", "SoCE, uniform weights", "SoCE"]
    k = len(rec["experts"])
    if k >= 2:
        from math import comb

        assert rec["evaluations"]["grid"] == comb(9, k - 1) > rec["evaluations"]["coarse_to_fine"]
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "SoCE" in (out / "table.md").read_text()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out / "model")
    gen = model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert gen.shape == (1, 7)
    assert "SoCE" in r.stdout and ("coarse_to_fine used" in r.stdout or k == 1)
    # a rerun resumes from the journal: no grid point is evaluated again
    journal = tmp_path / "run.journal.jsonl"
    n_lines = len(journal.read_text().splitlines())
    r = subprocess.run([sys.executable, "-m", "paperlab", "soup", "soce", str(cfg), "--force"], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(journal.read_text().splitlines()) == n_lines


def test_analyze_cli(tmp_path: Path, soup_cli) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "s.csv"
    p.write_text("model,a,b,c\nm1,10,20,30\nm2,20,40,10\nm3,30,60,20\n")
    r = soup_cli("analyze", str(p), "--tau", "0.6", "--heatmap", str(tmp_path / "h.png"), "--json",
                 str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["experts"] == ["m3", "m1"]
    assert (tmp_path / "h.png").is_file() and "expert for c: m1" in r.stdout
    r = soup_cli("analyze", str(p), "--model", "m9")
    assert r.returncode == 2 and "error: unknown model 'm9'" in r.stderr


@zoo_test
def test_soce_without_tokenizer_files(small_zoo: Path, tmp_path: Path) -> None:
    import shutil

    from paperlab.soup.checkpoint import TOKENIZER_FILES
    from paperlab.soup.errors import EvaluatorError, SoupError
    from paperlab.soup.soce import SoceConfig, run_soce
    from paperlab.soup.zoo.build import zoo_candidates

    bare = []
    for p in zoo_candidates(small_zoo):
        q = tmp_path / p.name
        shutil.copytree(p, q, ignore=shutil.ignore_patterns(*TOKENIZER_FILES, "special_tokens_map.json"))
        bare.append(str(q))
    # A jsonl evaluator needs a tokenizer: refused before any search, nothing written.
    with pytest.raises(EvaluatorError, match="no tokenizer files.*module:function"):
        run_soce(SoceConfig(candidates=bare, evaluator=f"jsonl:{small_zoo / 'val.jsonl'}", out=str(tmp_path / "o1")))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o1.journal.jsonl").exists()
    with pytest.raises(SoupError, match="unknown search 'annealing'; valid searches: grid, coarse_to_fine"):
        run_soce(SoceConfig(candidates=bare, evaluator=f"zoo:{small_zoo / 'val.jsonl'}", search="annealing",
                            out=str(tmp_path / "o2")))
    # The zoo evaluator brings its own tokenizer: the run completes, and the record says what is missing.
    res = run_soce(SoceConfig(candidates=bare, evaluator=f"zoo:{small_zoo / 'val.jsonl'}", out=str(tmp_path / "o3"),
                              baselines=False, threads=1))
    rec = yaml.safe_load((res.out_dir / "soce.yaml").read_text())
    assert rec["tokenizer"] is None and any("no tokenizer files" in n for n in rec["notes"])
    assert (res.out_dir / "model" / "model.safetensors").is_file()
