"""Offline data for the recipe: English text, GSM8K-style math, chat SFT examples, DPO pairs.

Stage 1 reads real English: ``pydoc_data.topics`` (about 0.5 MB of Python's own documentation,
shipped with every Python) by default, or any text file (tests use tinyshakespeare). Math comes
from GSM8K (``shared/data/gsm8k`` beside the checkout) when present, else from a seeded generator of small
arithmetic word problems in GSM8K's answer format (``... #### N``); the report says which.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paperlab.instella.errors import InstellaConfigError

GSM8K_FILES = ("train.jsonl", "test.jsonl")
ANSWER = re.compile(r"####\s*(-?[\d,\.]+)\s*$")
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str  # worked solution ending in "#### N"

    @property
    def answer(self) -> str:
        m = ANSWER.search(self.solution)
        return m.group(1).replace(",", "") if m else ""


def stage1_text(corpus: str) -> tuple[str, str]:
    """(train, held-out) English text; the last tenth is held out.

    Raises:
        InstellaConfigError: missing, unreadable or empty corpus.
    """
    if corpus == "pydoc":
        from pydoc_data.topics import topics

        text = "\n\n".join(topics[k] for k in sorted(topics))
    else:
        p = Path(corpus)
        if not p.is_file():
            raise InstellaConfigError(f"corpus {p} does not exist; give a text file or 'pydoc'")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InstellaConfigError(f"cannot read corpus {p} as UTF-8 text ({exc})") from None
    if len(text.strip()) < 2000:
        raise InstellaConfigError(
            f"corpus {corpus} holds {len(text.strip())} characters; give at least a few thousand"
        )
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


def shared_gsm8k(start: Path | None = None) -> Path | None:
    """``shared/data/gsm8k`` beside the checkout that holds this module (or ``start``), if any.

    The shared data lies next to the repository (``../shared`` from its root), so every folder
    above the module is a candidate parent; the nearest one that has it wins.
    """
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        candidate = parent / "shared" / "data" / "gsm8k"
        if candidate.is_dir():
            return candidate
    return None


def _read_jsonl(path: Path) -> list[Problem]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InstellaConfigError(f"cannot read {path} as UTF-8 text ({exc})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(Problem(row["question"].strip(), _CALC.sub("", row["answer"]).strip()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise InstellaConfigError(
                f"{path} line {n} is not a GSM8K record (a JSON object with 'question' and "
                "'answer' strings); give GSM8K's own train/test.jsonl"
            ) from None
    if not out:
        raise InstellaConfigError(f"{path} holds no problems; give GSM8K's own train/test.jsonl")
    return out


def synthetic_problems(n: int, seed: int) -> list[Problem]:
    """GSM8K-shaped two-step arithmetic word problems (for runs without ../shared)."""
    rng = random.Random(seed)
    names = ["Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus", "Hana"]
    things = ["apples", "books", "coins", "shells", "stamps", "pens", "cards", "eggs"]
    out = []
    for _ in range(n):
        who, what = rng.choice(names), rng.choice(things)
        a, b, c = rng.randint(2, 40), rng.randint(2, 40), rng.randint(2, 9)
        if rng.random() < 0.5:
            q = f"{who} has {a} {what} and gets {b} more. Then {who} gives away {c}. How many {what} are left?"
            s = f"{who} has {a} + {b} = {a + b} {what}.\nAfter giving away {c}, {a + b} - {c} = {a + b - c}.\n#### {a + b - c}"
        else:
            q = f"{who} buys {c} boxes with {a} {what} each and already had {b}. How many {what} now?"
            s = f"The boxes hold {c} * {a} = {c * a} {what}.\nWith the {b} from before, {c * a} + {b} = {c * a + b}.\n#### {c * a + b}"
        out.append(Problem(q, s))
    return out


def math_problems(source: str, seed: int, *, start: Path | None = None) -> tuple[list[Problem], list[Problem], str]:
    """(train, test, description of the source).

    ``source``: a GSM8K folder, "synthetic", or "auto" (``shared/data/gsm8k`` beside the
    checkout, see :func:`shared_gsm8k`, else synthetic problems; the description says which).

    Raises:
        InstellaConfigError: the folder lacks train.jsonl or test.jsonl, or a line is no GSM8K record.
    """
    def synthetic(why: str) -> tuple[list[Problem], list[Problem], str]:
        return synthetic_problems(2000, seed), synthetic_problems(200, seed + 1), f"synthetic GSM8K-style ({why})"

    if source == "synthetic":
        return synthetic("asked for")
    if source == "auto":
        found = shared_gsm8k(start)
        if found is None:
            return synthetic("auto: no shared/data/gsm8k beside the checkout")
        d = found
    else:
        d = Path(source)
    if not d.is_dir():
        raise InstellaConfigError(f"GSM8K folder {d} does not exist; give a GSM8K dir, 'auto' or 'synthetic'")
    missing = [f for f in GSM8K_FILES if not (d / f).is_file()]
    if missing:
        raise InstellaConfigError(
            f"{d} has no {' or '.join(missing)}; give a GSM8K dir with train.jsonl and test.jsonl, "
            "or --gsm8k synthetic"
        )
    return _read_jsonl(d / "train.jsonl"), _read_jsonl(d / "test.jsonl"), f"GSM8K ({d.resolve()})"


def raw_math(p: Problem) -> str:
    """The stage-2 (and held-out) text form of a problem."""
    return f"Question: {p.question}\nAnswer: {p.solution}"


def chat_messages(p: Problem) -> list[dict[str, str]]:
    return [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.solution}]


def corrupt(p: Problem, rng: random.Random) -> Problem:
    """The DPO 'rejected' side: the final answer changed (everywhere it is stated last)."""
    ans = p.answer
    try:
        wrong = str(int(float(ans)) + rng.choice([-3, -2, -1, 1, 2, 3, 10]))
    except ValueError:
        wrong = ans + "1"
    body, _, _ = p.solution.rpartition("####")
    idx = body.rfind(ans)
    if idx >= 0:
        body = body[:idx] + wrong + body[idx + len(ans):]
    return Problem(p.question, f"{body}#### {wrong}")


def train_bpe(texts: list[str], vocab: int) -> Any:
    """A byte-level BPE trained here with ``tokenizers``, wrapped like the released tokenizer
    (``<|endoftext|>`` = 0 = bos = eos, ``<|padding|>`` = 1, the instruct chat template)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from paperlab.instella.tokenizer import CHAT_TEMPLATE

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|padding|>",
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast
