"""`paperlab instella chat` (multi-turn, streamed, batch JSONL), generate's tokenizer check, and
the recipe finding GSM8K beside the checkout."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from paperlab.instella.chat import ChatSession, read_chat_file
from paperlab.instella.checkpoint import load_model, load_tokenizer_for
from paperlab.instella.errors import InstellaConfigError
from paperlab.instella.recipe.data import math_problems, shared_gsm8k

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_dir(tiny_preset_dir: Path) -> Path:
    """The tiny preset with the real tokenizer (random weights: the replies are noise)."""
    return tiny_preset_dir


def _cli(*args: str) -> int:
    from paperlab.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _greedy(model: torch.nn.Module, tok: object, messages: list[dict[str, str]], n: int) -> str:
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)  # type: ignore[attr-defined]
    ids = tok(text, return_tensors="pt", add_special_tokens=False)  # type: ignore[operator]
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=1)  # type: ignore[operator]
    return str(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))  # type: ignore[attr-defined]


# -- chat -------------------------------------------------------------------------------------

def test_session_is_multi_turn_streams_and_follows_the_template(tiny_dir: Path) -> None:
    model, tok = load_model(tiny_dir, device="cpu"), load_tokenizer_for(tiny_dir)
    session = ChatSession(model, tok, system="Be brief.", max_new_tokens=6)
    pieces: list[str] = []
    first = session.send("What is 2+2?", stream=pieces.append)
    assert "".join(pieces) == first.text and first.completion_tokens == 6
    second = session.send("And 3+3?")
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert session.messages[2]["content"] == first.text
    # the second reply is what greedy decoding gives on the whole history, rendered by the template
    assert second.text == _greedy(model, tok, session.messages[:4], 6)
    assert second.prompt_tokens > first.prompt_tokens + first.completion_tokens
    session.reset()
    assert session.messages == [{"role": "system", "content": "Be brief."}]


def test_cli_chat_interactive(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n/reset\nWhat is 2+2?\nAnd 3+3?\n/exit\n"))
    assert _cli("instella", "chat", str(tiny_dir), "--max-new-tokens", "4", "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert captured.out.count("instella> ") == 3
    assert "conversation reset" in captured.err and captured.err.count("4 tokens in") == 3


def test_cli_chat_batch_jsonl(tiny_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "What is 2+2?"}\n\n'
                   '{"id": "q2", "messages": [{"role": "user", "content": "Hi"}, '
                   '{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a sea."}]}\n'
                   '{"id": 9, "system": "Be brief.", "prompt": "Why is the sky blue? Answer at length."}\n')
    out = tmp_path / "replies.jsonl"
    assert _cli("instella", "chat", str(tiny_dir), "--input", str(src), "--output", str(out),
                "--max-new-tokens", "5", "--batch-size", "2", "--device", "cpu") == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, "q2", 9]  # the line number when no id is given
    assert all(r["completion_tokens"] <= 5 and r["finish_reason"] in ("stop", "length") for r in rows)
    # batched, left-padded replies equal one conversation at a time (greedy)
    model, tok = load_model(tiny_dir, device="cpu"), load_tokenizer_for(tiny_dir)
    for req, row in zip(read_chat_file(src), rows, strict=True):
        assert row["reply"] == _greedy(model, tok, req.messages, 5)


@pytest.mark.parametrize("content, message", [
    ("What is 2+2?\n", "line 1 is not JSON"),
    ('{"prompt": "a"}\n[1, 2]\n', "line 2 is not a JSON object"),
    ('{"text": "a"}\n', "exactly one of 'prompt'"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n', "last message"),
    ("\n\n", "holds no requests"),
])
def test_a_chat_file_that_is_not_jsonl_is_one_line(tiny_dir: Path, tmp_path: Path, content: str, message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    src.write_text(content)
    assert _cli("instella", "chat", str(tiny_dir), "--input", str(src), "--output", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not out.exists()


def test_chat_bad_checkpoint_and_outputs_are_one_line(tiny_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 32000}))
    src, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    src.write_text('{"prompt": "Hi"}\n')
    assert _cli("instella", "chat", str(llama), "--input", str(src), "--output", str(out)) == 2
    assert "model_type 'llama'" in capsys.readouterr().err and not out.exists()
    out.write_text("earlier replies\n")
    assert _cli("instella", "chat", str(tiny_dir), "--input", str(src), "--output", str(out)) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "earlier replies\n"
    assert _cli("instella", "chat", str(tiny_dir), "--input", str(src)) == 2
    assert "both --input" in capsys.readouterr().err


# -- generate's tokenizer ----------------------------------------------------------------------

def test_generate_without_a_fitting_tokenizer_is_one_line(released_dir: Path, tiny_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A 97-row model saved without its tokenizer: the released tokenizer's ids would index past
    the embedding; say so before loading the weights."""
    assert not (released_dir / "tokenizer.json").exists()
    assert _cli("instella", "generate", str(released_dir), "Hello", "--device", "cpu") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no tokenizer" in err and "97 rows" in err
    # a tokenizer that belongs to another model (50,280 tokens beside 97 rows)
    load_tokenizer_for(tiny_dir).save_pretrained(released_dir)
    assert _cli("instella", "chat", str(released_dir), "--device", "cpu") == 2
    assert "does not belong to these weights" in capsys.readouterr().err


# -- GSM8K beside the checkout -----------------------------------------------------------------

def _gsm8k(folder: Path, files: tuple[str, ...] = ("train.jsonl", "test.jsonl")) -> Path:
    folder.mkdir(parents=True)
    row = {"question": "Ann has 2 pens and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}
    for f in files:
        (folder / f).write_text(json.dumps(row) + "\n")
    return folder


def test_auto_finds_shared_gsm8k_in_a_checkout_layout(tmp_path: Path) -> None:
    """WORK/checkout/src/paperlab/instella/recipe/data.py finds WORK/shared/data/gsm8k."""
    module = tmp_path / "checkout" / "src" / "paperlab" / "instella" / "recipe" / "data.py"
    module.parent.mkdir(parents=True)
    assert shared_gsm8k(module) is None
    train, test, what = math_problems("auto", 0, start=module)
    assert what.startswith("synthetic GSM8K-style (auto: no shared/data/gsm8k")
    folder = _gsm8k(tmp_path / "shared" / "data" / "gsm8k")
    assert shared_gsm8k(module) == folder
    train, test, what = math_problems("auto", 0, start=module)
    assert what == f"GSM8K ({folder})" and train[0].answer == "5" and "<<" not in train[0].solution


@pytest.mark.needs_shared
def test_auto_finds_the_real_shared_gsm8k_beside_this_checkout() -> None:
    real = REPO.parent / "shared" / "data" / "gsm8k"
    if not (real / "train.jsonl").is_file():
        pytest.skip(f"{real} is absent (the shared data is not beside this checkout)")
    assert shared_gsm8k() == real
    train, test, what = math_problems("auto", 0)
    assert what == f"GSM8K ({real.resolve()})"
    assert (len(train), len(test)) == (7473, 1319)


def test_a_gsm8k_folder_without_its_files_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _gsm8k(tmp_path / "gsm8k", files=("train.jsonl",))
    with pytest.raises(InstellaConfigError, match="has no test.jsonl"):
        math_problems(str(folder), 0)
    (folder / "test.jsonl").write_text("not json\n")
    with pytest.raises(InstellaConfigError, match="line 1 is not a GSM8K record"):
        math_problems(str(folder), 0)
    (folder / "test.jsonl").unlink()
    threads = torch.get_num_threads()  # the command sizes torch's threads at its start
    try:
        code = _cli("instella", "recipe", "--preset", "tiny", "--gsm8k", str(folder),
                    "--out", str(tmp_path / "run"))
    finally:
        torch.set_num_threads(threads)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no test.jsonl" in err
    assert not (tmp_path / "run").exists()
