"""Every bad-input class gets its one-line error before heavy work; crashes leave no output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from paperlab.soup.config import MergeSpec, load_merge_config
from paperlab.soup.errors import CheckpointError, MergeConfigError, SoupError, WeightsError
from paperlab.soup.merge import merge
from paperlab.soup.writer import ShardedWriter

REPO = Path(__file__).resolve().parents[2]


def spec(paths: list[Path], weights: list[float] | None = None, **kw: object) -> MergeSpec:
    weights = weights if weights is not None else [1.0] * len(paths)
    return MergeSpec(models=[{"model": str(p), "weight": w} for p, w in zip(paths, weights, strict=False)], **kw)  # type: ignore[misc]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, make_llama_fn) -> list[Path]:  # type: ignore[no-untyped-def]
    make_llama = make_llama_fn
    root = tmp_path_factory.mktemp("pair")
    return [make_llama(root / "a", 1, tokenizer=False), make_llama(root / "b", 2, tokenizer=False)]


def clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    f = path / "model.safetensors"
    state = load_file(f)
    fn(state)
    save_file(state, f, metadata={"format": "pt"})


def edit_config(path: Path, **changes: object) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def expect(exc: type[Exception], match: str, paths: list[Path], tmp_path: Path, **kw: object) -> None:
    out = tmp_path / "out"
    with pytest.raises(exc, match=match):
        merge(spec(paths, **kw), out)
    assert not out.exists()


def test_missing_directory(pair: list[Path], tmp_path: Path) -> None:
    expect(CheckpointError, "does not exist", [pair[0], tmp_path / "nope"], tmp_path)


def test_missing_config_and_weights(pair: list[Path], tmp_path: Path) -> None:
    b = clone(pair[1], tmp_path / "b")
    (b / "config.json").unlink()
    expect(CheckpointError, "config.json is missing", [pair[0], b], tmp_path)
    c = clone(pair[1], tmp_path / "c")
    (c / "model.safetensors").unlink()
    expect(CheckpointError, "no model weights found", [pair[0], c], tmp_path)


def test_missing_shard_of_index(pair: list[Path], tmp_path: Path, make_llama_fn) -> None:
    make_llama = make_llama_fn
    b = make_llama(tmp_path / "b", 2, shard="20KB", tokenizer=False)
    next(b.glob("model-00002-*.safetensors")).unlink()
    expect(CheckpointError, "shard.*missing", [pair[0], b], tmp_path)


def test_different_tensor_names(pair: list[Path], tmp_path: Path) -> None:
    b = clone(pair[1], tmp_path / "b")
    rewrite(b, lambda s: s.update({"model.extra.weight": torch.zeros(2)}))
    expect(CheckpointError, r"different tensor names: 'model.extra.weight' is in .*b but not in", [pair[0], b], tmp_path)


def test_shape_mismatch_names_tensor_and_models(pair: list[Path], tmp_path: Path) -> None:
    b = clone(pair[1], tmp_path / "b")
    rewrite(b, lambda s: s.update({"model.norm.weight": torch.ones(33)}))
    expect(CheckpointError, r"shape mismatch for tensor 'model.norm.weight': \[32\] in .*a vs \[33\] in .*b", [pair[0], b], tmp_path)


def test_architecture_mismatch(pair: list[Path], tmp_path: Path) -> None:
    b = clone(pair[1], tmp_path / "b")
    edit_config(b, architectures=["MistralForCausalLM"], model_type="mistral")
    expect(CheckpointError, "architecture mismatch", [pair[0], b], tmp_path)


def test_vocab_size_mismatch(pair: list[Path], tmp_path: Path, make_llama_fn) -> None:
    make_llama = make_llama_fn
    b = make_llama(tmp_path / "b", 2, vocab=100, tokenizer=False)
    expect(CheckpointError, "vocabulary size mismatch: .* has 96 tokens but .* has 100", [pair[0], b], tmp_path)


def test_tied_vs_untied(pair: list[Path], tmp_path: Path, make_llama_fn) -> None:
    make_llama = make_llama_fn
    b = make_llama(tmp_path / "b", 2, tied=True, tokenizer=False)
    expect(CheckpointError, "tied vs untied embeddings", [pair[0], b], tmp_path)


def test_untied_without_lm_head(pair: list[Path], tmp_path: Path) -> None:
    b = clone(pair[1], tmp_path / "b")
    rewrite(b, lambda s: s.pop("lm_head.weight"))
    expect(CheckpointError, "lm_head.weight is missing", [pair[0], b], tmp_path)


def test_mixed_dtypes_are_allowed_and_reported(pair: list[Path], tmp_path: Path, make_llama_fn) -> None:
    make_llama = make_llama_fn
    b = make_llama(tmp_path / "b", 2, dtype="bfloat16", tokenizer=False)
    result = merge(spec([pair[0], b]), tmp_path / "out")
    assert any("mixed dtypes" in n for n in result.notes)
    assert load_file(tmp_path / "out" / "model.safetensors")["lm_head.weight"].dtype == torch.float32


def test_truncated_and_corrupt_headers(pair: list[Path], tmp_path: Path) -> None:
    b = clone(pair[1], tmp_path / "b")
    f = b / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    expect(CheckpointError, "truncated safetensors file", [pair[0], b], tmp_path)
    f.write_bytes(data[:5])
    expect(CheckpointError, "truncated safetensors file", [pair[0], b], tmp_path)
    f.write_bytes(data[:8] + b"{not json" + data[17:])
    expect(CheckpointError, "corrupt safetensors header", [pair[0], b], tmp_path)


def test_non_finite_inputs_only_with_check_finite(pair: list[Path], tmp_path: Path) -> None:
    b = clone(pair[1], tmp_path / "b")

    def poison(s: dict[str, torch.Tensor]) -> None:
        s["model.norm.weight"][3] = float("nan")

    rewrite(b, poison)
    expect(CheckpointError, r"tensor 'model.norm.weight' in .*b contains NaN or Inf", [pair[0], b], tmp_path, check_finite=True)
    merge(spec([pair[0], b]), tmp_path / "ok")  # without the check the merge runs


@pytest.mark.parametrize("weights,method,match", [
    ([0.5, -0.5], "linear", "non-negative"),
    ([0.0, 0.0], "linear", "all weights are zero"),
    ([0.3, 0.7], "uniform", r"unsupported parameter\(s\) in models\[0\].parameters: weight; method 'uniform' takes"),
    ([0.3, 0.7], "nope", "unknown merge method 'nope'; valid methods: arcee_fusion, .*karcher, .*linear, .*ties, uniform"),
])
def test_weights_that_do_not_fit(pair: list[Path], tmp_path: Path, weights, method, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SoupError, match=match):
        merge(spec(pair, weights, method=method), tmp_path / "o")


def test_wrong_weight_count(pair: list[Path], tmp_path: Path) -> None:
    from paperlab.soup.methods import get_method

    with pytest.raises(WeightsError, match="got 1 weight"):
        get_method("linear").resolve([1.0], 2, normalize=True)
    with pytest.raises(WeightsError, match="needs a base model"):
        merge(spec(pair, method="ties"), tmp_path / "o")


def test_pickle_refused_unless_allowed(pair: list[Path], tmp_path: Path) -> None:
    b = tmp_path / "b"
    b.mkdir()
    shutil.copy(pair[1] / "config.json", b / "config.json")
    torch.save(load_file(pair[1] / "model.safetensors"), b / "pytorch_model.bin")
    expect(CheckpointError, "pickle checkpoint .*--allow-pickle", [pair[0], b], tmp_path)
    merge(spec([pair[0], b], [0.5, 0.5], allow_pickle=True), tmp_path / "out")
    got = load_file(tmp_path / "out" / "model.safetensors")
    a, bb = load_file(pair[0] / "model.safetensors"), load_file(pair[1] / "model.safetensors")
    assert torch.equal(got["lm_head.weight"], a["lm_head.weight"] * 0.5 + bb["lm_head.weight"] * 0.5)


@pytest.mark.parametrize("exc", [OSError("disk full (injected)"), KeyboardInterrupt()])
def test_crash_mid_write_leaves_no_output(pair: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          exc: BaseException) -> None:
    calls = {"n": 0}
    real = ShardedWriter.write

    def crashing(self, name, data):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise exc  # a full disk, or Ctrl-C arriving in the writer thread
        return real(self, name, data)

    monkeypatch.setattr(ShardedWriter, "write", crashing)
    # A write error becomes one SoupError line; Ctrl-C stays a KeyboardInterrupt.
    expected = SoupError if isinstance(exc, OSError) else type(exc)
    with pytest.raises(expected):
        merge(spec(pair, chunk_elements=100), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary sibling
    # An existing output survives a crashing --force merge untouched.
    keep = tmp_path / "keep"
    merge(spec(pair), keep)  # an earlier paperlab output: the only kind --force replaces
    (keep / "precious.txt").write_text("x")
    calls["n"] = 0
    with pytest.raises(expected):
        merge(spec(pair, chunk_elements=100), keep, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"] and (keep / "precious.txt").is_file()


def test_existing_output_needs_force(pair: list[Path], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(SoupError, match="already exists.*--force"):
        merge(spec(pair), tmp_path / "out")
    merge(spec(pair), tmp_path / "out", force=True)
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_mergekit_yaml_config(pair: list[Path], tmp_path: Path) -> None:
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(
        f"merge_method: linear\nmodels:\n  - model: {pair[0]}\n    parameters: {{weight: 3}}\n"
        f"  - model: {pair[1]}\n    parameters: {{weight: 1}}\ndtype: bfloat16\n"
        "parameters: {normalize: true}\npaperlab: {shard_size: 30KB}\n"
    )
    s = load_merge_config(cfg)
    assert [m.parameters["weight"] for m in s.models] == [3, 1] and s.dtype == "bfloat16" and s.shard_size == 30_000
    cfg.write_text(f"merge_method: linear\nsliced: []\nmodels: [{{model: {pair[0]}}}]\n")
    with pytest.raises(MergeConfigError, match="unsupported key.*sliced.*honoured keys are"):
        load_merge_config(cfg)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "paperlab", "soup", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_entry_point_in_a_fresh_interpreter(pair: list[Path], tmp_path: Path) -> None:
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(f"merge_method: linear\nmodels:\n  - model: {pair[0]}\n    parameters: {{weight: 0.5}}\n"
                   f"  - model: {pair[1]}\n    parameters: {{weight: 0.5}}\n")
    r = run_cli("merge", str(cfg), str(tmp_path / "o1"))
    assert r.returncode == 0, r.stderr
    r = run_cli("merge", "--model", str(pair[0]), "--weight", "0.5", "--model", str(pair[1]), "--weight", "0.5",
                "--shard-size", "30KB", str(tmp_path / "o2"))
    assert r.returncode == 0, r.stderr
    a, b = load_file(tmp_path / "o1" / "model.safetensors"), {}
    for f in (tmp_path / "o2").glob("*.safetensors"):
        b.update(load_file(f))
    assert all(torch.equal(a[k], b[k]) for k in a)
    r = run_cli("merge", "--model", str(pair[0]), "--weight", "-1", "--model", str(pair[1]), "--weight", "1", str(tmp_path / "o3"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "non-negative" in r.stderr
    assert not (tmp_path / "o3").exists()


def test_cli_config_and_flag_forms_in_process(pair: list[Path], tmp_path: Path, soup_cli) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(f"merge_method: linear\nmodels:\n  - model: {pair[0]}\n    parameters: {{weight: 0.5}}\n"
                   f"  - model: {pair[1]}\n    parameters: {{weight: 0.5}}\n")
    r = soup_cli("merge", str(cfg), str(tmp_path / "o1"), "--quiet")
    assert r.returncode == 0, r.stderr
    r = soup_cli("merge", "--model", str(pair[0]), "--weight", "0.5", "--model", str(pair[1]), "--weight", "0.5",
                 "--shard-size", "30KB", "--quiet", str(tmp_path / "o2"))
    assert r.returncode == 0, r.stderr
    a, b = load_file(tmp_path / "o1" / "model.safetensors"), {}
    for f in (tmp_path / "o2").glob("*.safetensors"):
        b.update(load_file(f))
    assert len(list((tmp_path / "o2").glob("*.safetensors"))) > 1 and all(torch.equal(a[k], b[k]) for k in a)
    r = soup_cli("merge", "--model", str(pair[0]), "--weight", "-1", "--model", str(pair[1]), "--weight", "1",
                 str(tmp_path / "o3"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "non-negative" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o3").exists()
    r = soup_cli("merge", str(cfg), str(tmp_path / "o4"), "--unsafe-truncate-embeddings")
    assert r.returncode == 2 and "tokenizer: {source: base}" in r.stderr


def test_mapped_pieces_equal_read_pieces_and_a_file_cut_short_is_one_error(pair: list[Path], tmp_path: Path) -> None:
    from paperlab.soup.checkpoint import open_checkpoint

    b = clone(pair[1], tmp_path / "b")
    ck = open_checkpoint(b)
    try:
        name = max(ck.tensors, key=lambda n: ck.tensors[n].numel)
        n = ck.tensors[name].numel
        for start, stop in [(0, n), (3, n - 5), (1001, 1001), (n - 1, n)]:  # offsets not page-aligned
            assert torch.equal(ck.mapped(name, start, stop), ck.read(name, start, stop)), (start, stop)
        f = b / "model.safetensors"
        os.truncate(f, f.stat().st_size - 4)  # cut short after the header was checked
        last = max(ck.tensors, key=lambda n: ck.tensors[n].start)
        with pytest.raises(CheckpointError, match="file ended while reading"):
            ck.mapped(last)
    finally:
        ck.close()
