"""Safe conditional expressions for TaskStarLines.

A conditional edge carries a tiny expression over the upstream task's result, for example
``result["ok"] and result["count"] > 3`` or ``status == "completed"``. It is parsed with
:mod:`ast` and only a whitelist of node types is accepted: literals, the names ``result`` and
``status``, subscripts and attribute reads into dicts, comparisons, ``and``/``or``/``not``,
unary minus and ``len()``. Nothing is ever passed to ``eval``: :func:`evaluate` walks the tree
itself, so a plan file cannot run code on the orchestrator.
"""

from __future__ import annotations

import ast
import operator
from functools import lru_cache
from typing import Any

from paperlab.galaxy.errors import ConditionError

__all__ = ["check_condition", "evaluate"]

_NAMES = frozenset({"result", "status"})
_MAX_LEN = 500
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare,
    ast.Constant, ast.Name, ast.Load, ast.Subscript, ast.Attribute, ast.List, ast.Tuple,
    ast.Call, *_COMPARE,
)


@lru_cache(maxsize=512)
def check_condition(text: str) -> ast.Expression:
    """Parse ``text`` and verify it only uses the whitelisted constructs.

    Raises:
        ConditionError: the expression is too long, does not parse, or uses anything else.
    """
    if len(text) > _MAX_LEN:
        raise ConditionError(f"condition is longer than {_MAX_LEN} characters; simplify it")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ConditionError(f"condition {text!r} does not parse: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ConditionError(
                f"condition {text!r} uses {type(node).__name__}, which is not allowed; use "
                "literals, result/status, [..], comparisons, and/or/not, len()"
            )
        if isinstance(node, ast.Name) and node.id not in _NAMES and node.id != "len":
            raise ConditionError(f"condition {text!r} names {node.id!r}; only result and status exist")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ConditionError(f"condition {text!r} reads private attribute {node.attr!r}")
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id == "len" and len(node.args) == 1
            and not node.keywords
        ):
            raise ConditionError(f"condition {text!r} calls something other than len(x)")
    return tree


def evaluate(text: str, result: Any, status: str = "completed") -> bool:
    """Evaluate a checked condition over an upstream ``result`` and its ``status``.

    A lookup that fails (missing key, wrong type) makes the condition false rather than
    crashing the orchestrator: a result that lacks a field did not meet the condition.
    """
    tree = check_condition(text)
    try:
        return bool(_eval(tree.body, {"result": result, "status": status}))
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        return False


def _eval(node: ast.AST, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            value: Any = True
            for v in node.values:
                value = _eval(v, env)
                if not value:
                    return value
            return value
        value = False
        for v in node.values:
            value = _eval(v, env)
            if value:
                return value
        return value
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, env)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Subscript):
        return _eval(node.value, env)[_eval(node.slice, env)]
    if isinstance(node, ast.Attribute):
        # Attribute reads only look into dicts, so `result.ok` means result["ok"]; Python
        # object attributes are never touched.
        base = _eval(node.value, env)
        if not isinstance(base, dict):
            raise TypeError("attribute access only into dicts")
        return base[node.attr]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.Call):
        return len(_eval(node.args[0], env))
    raise ConditionError(f"unsupported node {type(node).__name__}")  # unreachable after check
