"""Evaluators: ``evaluate(model) -> {category: score}`` (scores in percent), with built-ins.

- ``jsonl:PATH``: a categorized JSONL benchmark, one ``{"prompt", "answer", "category",
  "matcher"}`` per line, run with greedy generation on a Hugging Face model. Matchers:
  ``exact`` (equal after stripping whitespace), ``regex`` (``answer`` is a pattern that must
  match the whole stripped output), ``json`` (output and answer parse to equal JSON values;
  the first JSON value in the output is used).
- ``zoo:PATH``: the zoo benchmark (the same JSONL, exact matcher) scored by teacher forcing:
  greedy decoding produces the answer exactly when, fed the answer, the model's argmax at every
  answer position (and at the end-of-answer token) is the next answer token. One forward pass
  per batch instead of a token-by-token loop; the tests check it agrees with generation.
- ``module:function``: a plug-in; the function takes the model and returns the score dict.
"""

from __future__ import annotations

import importlib
import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from paperlab.soup.errors import EvaluatorError

MATCHERS = ("exact", "regex", "json")


class Evaluator(Protocol):
    """Anything that scores a live model per category."""

    def evaluate(self, model: Any) -> dict[str, float]: ...


@dataclass(frozen=True)
class Item:
    prompt: str
    answer: str
    category: str
    matcher: str = "exact"


def load_jsonl(path: str | Path) -> list[Item]:
    """Read and validate a categorized JSONL benchmark.

    Raises:
        EvaluatorError: a missing file, bad JSON, missing fields or an unknown matcher (with the line).
    """
    p = Path(path)
    if not p.is_file():
        raise EvaluatorError(f"benchmark file {p} does not exist; check the path")
    items = []
    for i, line in enumerate(p.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise EvaluatorError(f"{p}:{i}: not valid JSON ({exc})") from None
        missing = [k for k in ("prompt", "answer", "category") if k not in rec]
        if missing:
            raise EvaluatorError(f"{p}:{i}: missing field(s) {', '.join(missing)}")
        matcher = rec.get("matcher", "exact")
        if matcher not in MATCHERS:
            raise EvaluatorError(f"{p}:{i}: unknown matcher {matcher!r}; use one of {', '.join(MATCHERS)}")
        if matcher == "regex":
            try:
                re.compile(rec["answer"])
            except re.error as exc:
                raise EvaluatorError(f"{p}:{i}: invalid regex {rec['answer']!r} ({exc})") from None
        items.append(Item(str(rec["prompt"]), str(rec["answer"]), str(rec["category"]), matcher))
    if not items:
        raise EvaluatorError(f"{p}: no items")
    return items


def _first_json(text: str) -> Any:
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "[{\"-0123456789tfn":
            try:
                return dec.raw_decode(text[i:])[0]
            except ValueError:
                continue
    raise ValueError("no JSON value")


def match(output: str, answer: str, matcher: str) -> bool:
    """Does a model output match the expected answer under ``matcher``?"""
    out = output.strip()
    if matcher == "exact":
        return out == answer.strip()
    if matcher == "regex":
        return re.fullmatch(answer, out, flags=re.DOTALL) is not None
    if matcher == "json":
        try:
            return bool(_first_json(out) == json.loads(answer))
        except ValueError:
            return False
    raise EvaluatorError(f"unknown matcher {matcher!r}; use one of {', '.join(MATCHERS)}")


def _per_category(items: list[Item], correct: list[bool]) -> dict[str, float]:
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for it, ok in zip(items, correct, strict=True):
        tally[it.category][0] += int(ok)
        tally[it.category][1] += 1
    return {c: 100.0 * k / n for c, (k, n) in tally.items()}


class JsonlEvaluator:
    """Greedy generation on an HF model, matched per item, averaged per category."""

    def __init__(self, path: str | Path, tokenizer: Any, *, max_new_tokens: int = 64, batch_size: int = 32) -> None:
        self.items = load_jsonl(path)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def generate(self, model: Any, prompts: list[str]) -> list[str]:
        import torch

        tok = self.tokenizer
        tok.padding_side = "left"
        outs: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            enc = tok(prompts[i : i + self.batch_size], return_tensors="pt", padding=True)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            outs.extend(tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        return outs

    def evaluate(self, model: Any) -> dict[str, float]:
        outs = self.generate(model, [it.prompt for it in self.items])
        return _per_category(self.items, [match(o, it.answer, it.matcher) for o, it in zip(outs, self.items, strict=True)])


class ZooEvaluator:
    """Exact-match accuracy on the zoo benchmark by teacher forcing (see the module docstring)."""

    def __init__(self, path: str | Path, *, batch_size: int = 256) -> None:
        self.items = load_jsonl(path)
        self.batch_size = batch_size

    def evaluate(self, model: Any) -> dict[str, float]:
        return _per_category(self.items, self.correct(model))

    def correct(self, model: Any) -> list[bool]:
        """Per item: would greedy decoding produce exactly the answer, then end-of-sequence?"""
        import torch

        from paperlab.soup.zoo.build import batch_tensors
        from paperlab.soup.zoo.tasks import Example

        correct: list[bool] = []
        for i in range(0, len(self.items), self.batch_size):
            chunk = self.items[i : i + self.batch_size]
            ids, mask, lab = batch_tensors([Example(it.category, it.prompt, it.answer) for it in chunk])
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=mask).logits
            pred = logits[:, :-1].argmax(-1)
            target = lab[:, 1:]
            ok = ((pred == target) | (target == -100)).all(-1)
            correct.extend(bool(x) for x in ok)
        return correct


def load_plugin(spec: str) -> Callable[[Any], dict[str, float]]:
    """``module:function`` -> the function (checked to be callable).

    Raises:
        EvaluatorError: a malformed spec, a module that does not import, or a missing function.
    """
    if spec.count(":") != 1:
        raise EvaluatorError(f"plug-in evaluator {spec!r} must look like module:function")
    mod_name, fn_name = spec.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise EvaluatorError(f"cannot import evaluator module {mod_name!r} ({exc}); check PYTHONPATH") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise EvaluatorError(f"module {mod_name!r} has no function {fn_name!r}")
    return fn  # type: ignore[no-any-return]


class PluginEvaluator:
    """Wraps a user function ``fn(model) -> {category: score}`` and checks what it returns."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.fn = load_plugin(spec)

    def evaluate(self, model: Any) -> dict[str, float]:
        out = self.fn(model)
        if not isinstance(out, dict) or not all(isinstance(v, (int, float)) for v in out.values()):
            raise EvaluatorError(f"evaluator {self.spec} must return a dict of category -> number")
        return {str(k): float(v) for k, v in out.items()}


def make_evaluator(spec: str, *, tokenizer_dir: str | Path | None = None) -> Evaluator:
    """Build an evaluator from its spec: ``jsonl:PATH``, ``zoo:PATH`` or ``module:function``."""
    if spec.startswith("jsonl:"):
        from transformers import AutoTokenizer

        if tokenizer_dir is None:
            raise EvaluatorError("the jsonl evaluator needs a tokenizer (the first candidate's directory)")
        return JsonlEvaluator(spec[len("jsonl:"):], AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    if spec.startswith("zoo:"):
        return ZooEvaluator(spec[len("zoo:"):])
    if ":" in spec:
        return PluginEvaluator(spec)
    raise EvaluatorError(f"unknown evaluator {spec!r}; use jsonl:PATH, zoo:PATH or module:function")
