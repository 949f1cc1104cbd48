"""Safe edge conditions: a whitelist over ast, evaluated without eval()."""

from __future__ import annotations

import pytest

from paperlab.galaxy.errors import ConditionError
from paperlab.galaxy.plan.conditions import check_condition, evaluate


@pytest.mark.parametrize(
    ("expr", "result", "expected"),
    [
        ("result['ok']", {"ok": True}, True),
        ("result.ok and result.n > 3", {"ok": True, "n": 5}, True),
        ("result.n > 3", {"n": 2}, False),
        ("not result.ok or len(result.items) >= 2", {"ok": True, "items": [1, 2]}, True),
        ("'x' in result.tags", {"tags": ["x", "y"]}, True),
        ("result.n in [1, 2, 3]", {"n": 4}, False),
        ("status == 'completed'", None, True),
        ("1 < result < 10", 5, True),
        ("result.missing == 1", {}, False),  # a failed lookup is false, not a crash
        ("-result.n < 0", {"n": 1}, True),
    ],
)
def test_evaluate(expr: str, result: object, expected: bool) -> None:
    assert evaluate(expr, result) is expected


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "result.__class__",
        "[x for x in result]",
        "lambda: 1",
        "os",
        "result if result else 0",
        "len(result, 2)",
        "result.keys()",
        "x := 1",
        "(",
        "a" * 600,
    ],
)
def test_rejects_unsafe(expr: str) -> None:
    with pytest.raises(ConditionError):
        check_condition(expr)
