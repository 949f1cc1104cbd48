"""The JSONL benchmark's matchers and file checks, and the plug-in loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paperlab.soup.errors import EvaluatorError
from paperlab.soup.evaluators import PluginEvaluator, load_jsonl, make_evaluator, match


@pytest.mark.parametrize("output,answer,matcher,ok", [
    ("  get_time(city=rome)\n", "get_time(city=rome)", "exact", True),
    ("get_time(city=rome) ", "get_time(city=oslo)", "exact", False),
    ("The answer is 42.", r"The answer is \d+\.", "regex", True),
    ("The answer is 42. More", r"The answer is \d+\.", "regex", False),  # whole output must match
    ('Sure: {"name": "f", "args": {"b": 2, "a": 1}} done', '{"args": {"a": 1, "b": 2}, "name": "f"}', "json", True),
    ('{"name": "f", "args": {"a": 2}}', '{"name": "f", "args": {"a": 1}}', "json", False),
    ("no json here", '{"a": 1}', "json", False),
    ("[1, 2, 3]", "[1,2,3]", "json", True),
])
def test_matchers(output: str, answer: str, matcher: str, ok: bool) -> None:
    assert match(output, answer, matcher) is ok


def test_jsonl_validation(tmp_path: Path) -> None:
    p = tmp_path / "b.jsonl"
    p.write_text(json.dumps({"prompt": "x", "answer": "y", "category": "c"}) + "\n\n")
    assert load_jsonl(p)[0].matcher == "exact"
    p.write_text(json.dumps({"prompt": "x", "answer": "y"}) + "\n")
    with pytest.raises(EvaluatorError, match=r"b.jsonl:1: missing field\(s\) category"):
        load_jsonl(p)
    p.write_text(json.dumps({"prompt": "x", "answer": "y", "category": "c", "matcher": "fuzzy"}) + "\n")
    with pytest.raises(EvaluatorError, match="unknown matcher 'fuzzy'"):
        load_jsonl(p)
    p.write_text(json.dumps({"prompt": "x", "answer": "(", "category": "c", "matcher": "regex"}) + "\n")
    with pytest.raises(EvaluatorError, match="invalid regex"):
        load_jsonl(p)
    p.write_text("{not json\n")
    with pytest.raises(EvaluatorError, match="b.jsonl:1: not valid JSON"):
        load_jsonl(p)


def test_plugin_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_eval.py").write_text("def score(model):\n    return {'a': 50, 'b': 75.0}\n"
                                         "def bad(model):\n    return [1]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert make_evaluator("my_eval:score").evaluate(object()) == {"a": 50.0, "b": 75.0}
    with pytest.raises(EvaluatorError, match="must return a dict"):
        PluginEvaluator("my_eval:bad").evaluate(object())
    with pytest.raises(EvaluatorError, match="has no function 'nope'"):
        make_evaluator("my_eval:nope")
    with pytest.raises(EvaluatorError, match="cannot import evaluator module"):
        make_evaluator("no_such_module_xyz:f")
    with pytest.raises(EvaluatorError, match="unknown evaluator"):
        make_evaluator("whatever")
