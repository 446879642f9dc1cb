"""Derived-feature expressions (`features.derived`), parsed into an allowed set of operations.

An expression is Python-like text over the joined columns, e.g.
`time_hour.dt.tz_convert("America/New_York").dt.dayofweek` or `year - plane_year`. It is
parsed once, when the config loads, into a tree of the operations below, and evaluated by
walking that tree: nothing is ever handed to `eval`, so a config (or a model that carries
its expressions) can compute columns but can do nothing else. Anything outside the set is
refused at load, naming the expression and the part that is not allowed.

Allowed: column names; numbers, strings, True/False; + - * / // % ** and unary - + ~;
comparisons (chained too); & | (element-wise and, or); the functions in `FUNCTIONS`; the
datetime fields in `DT_FIELDS` and methods in `DT_METHODS` after `.dt`; the string methods
in `STR_METHODS` after `.str`. The results are pandas' own, as `DataFrame.eval` gave them.
"""

from __future__ import annotations

import ast
import functools
import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
}
UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
}
COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "log": np.log,
    "log1p": np.log1p,
    "exp": np.exp,
    "floor": np.floor,
    "ceil": np.ceil,
}
DT_FIELDS = frozenset(
    {"year", "month", "day", "hour", "minute", "second", "dayofweek", "weekday", "dayofyear", "quarter"}
)
DT_METHODS = frozenset({"tz_convert", "tz_localize"})  # each takes one time-zone name
STR_METHODS = frozenset({"len", "lower", "upper", "strip"})  # no arguments

Node = Callable[[pd.DataFrame], Any]


class ExpressionError(ValueError):
    """An expression outside the allowed operations, or one that does not parse."""


@dataclass(frozen=True)
class Expression:
    """One parsed expression: the text it came from, the columns it reads, and its tree."""

    text: str
    columns: tuple[str, ...]
    evaluate: Node

    def __call__(self, frame: pd.DataFrame) -> Any:
        return self.evaluate(frame)


def parse_expression(text: str) -> Expression:
    """The expression as a tree of allowed operations; ExpressionError names what is not."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"{text!r} does not parse ({exc.msg})") from None
    columns: list[str] = []
    evaluate = _compile(tree.body, text, columns)
    return Expression(text, tuple(dict.fromkeys(columns)), evaluate)


def _refuse(node: ast.AST, text: str, what: str) -> ExpressionError:
    part = ast.get_source_segment(text.strip(), node) or type(node).__name__
    return ExpressionError(f"{text!r}: {what} ({part!r}) is not an allowed operation")


def _compile(node: ast.AST, text: str, columns: list[str]) -> Node:
    if isinstance(node, ast.Name):
        name = node.id
        columns.append(name)
        return lambda frame: _column(frame, name)
    if isinstance(node, ast.Constant) and isinstance(node.value, bool | int | float | str):
        value = node.value
        return lambda frame: value
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        op, left, right = (
            BINARY[type(node.op)],
            _compile(node.left, text, columns),
            _compile(node.right, text, columns),
        )
        return lambda frame: op(left(frame), right(frame))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        unary, operand = UNARY[type(node.op)], _compile(node.operand, text, columns)
        return lambda frame: unary(operand(frame))
    if isinstance(node, ast.Compare) and all(type(o) in COMPARE for o in node.ops):
        return _comparison(node, text, columns)
    if isinstance(node, ast.Attribute):
        return _attribute(node, text, columns)
    if isinstance(node, ast.Call):
        return _call(node, text, columns)
    raise _refuse(node, text, type(node).__name__.lower())


def _comparison(node: ast.Compare, text: str, columns: list[str]) -> Node:
    """`a < b < c` as `(a < b) & (b < c)`, element-wise."""
    operands = [_compile(n, text, columns) for n in (node.left, *node.comparators)]
    ops = [COMPARE[type(o)] for o in node.ops]

    def evaluate(frame: pd.DataFrame) -> Any:
        values = [operand(frame) for operand in operands]
        results = [op(a, b) for op, (a, b) in zip(ops, itertools.pairwise(values), strict=True)]
        return functools.reduce(operator.and_, results)

    return evaluate


def _accessor(node: ast.AST) -> tuple[ast.AST, str] | None:
    """`<x>.dt` or `<x>.str`: the inner node and the accessor's name."""
    if isinstance(node, ast.Attribute) and node.attr in ("dt", "str"):
        return node.value, node.attr
    return None


def _attribute(node: ast.Attribute, text: str, columns: list[str]) -> Node:
    found = _accessor(node.value)
    if found is None or found[1] != "dt" or node.attr not in DT_FIELDS:
        raise _refuse(node, text, f"attribute {node.attr!r}")
    inner, field = _compile(found[0], text, columns), node.attr
    return lambda frame: getattr(inner(frame).dt, field)


def _call(node: ast.Call, text: str, columns: list[str]) -> Node:
    if node.keywords:
        raise _refuse(node, text, "a keyword argument")
    if isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if len(node.args) != 1:
            raise _refuse(node, text, f"{node.func.id}() with {len(node.args)} arguments")
        function, argument = FUNCTIONS[node.func.id], _compile(node.args[0], text, columns)
        return lambda frame: function(argument(frame))
    if isinstance(node.func, ast.Attribute) and (found := _accessor(node.func.value)) is not None:
        inner_node, accessor = found
        method = node.func.attr
        if accessor == "dt" and method in DT_METHODS:
            if len(node.args) != 1 or not (
                isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
            ):
                raise _refuse(node, text, f".dt.{method}() without one time-zone name")
            zone, inner = node.args[0].value, _compile(inner_node, text, columns)
            return lambda frame: getattr(inner(frame).dt, method)(zone)
        if accessor == "str" and method in STR_METHODS and not node.args:
            inner = _compile(inner_node, text, columns)
            return lambda frame: getattr(inner(frame).str, method)()
    raise _refuse(node, text, "this call")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        raise ExpressionError(f"column {name!r} is not in the joined frame")
    return frame[name]
