"""Threshold expressions (`--fail-if`, a bench file's `fail_if`): their grammar and parser.

Grammar: one comparison (<, <=, >, >=, ==, !=) between two arithmetic expressions made of
`VARIANT.METRIC` references, numbers, + - * /, unary minus and parentheses, e.g.

    after.peak_connections > 25
    after.p95_ms > 1.2 * before.p95_ms
    after.goodput < before.goodput

It is parsed with Python's `ast` and a whitelist of node types, never evaluated by Python.
VARIANT may contain hyphens (bench-file names do): `my-app.p95_ms`; a minus between two
references needs no space (`after.x-before.x`) since a METRIC has none. Parsed when the bench
file or the command line is read, so a malformed gate fails before a run; what a gate means
and how it is decided against a run is poolbench/analysis/thresholds.py.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from poolbench.errors import PoolbenchError

# VARIANT.METRIC not preceded by a name character or a dot (so 1.5e-3 and a.b.c are not refs)
_REF = re.compile(r"(?<![\w.])([A-Za-z_][\w-]*)\.([A-Za-z_]\w*)")
_PLACEHOLDER = "_ref{}_"
_COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[float, float], bool]]] = {
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
}
BY_SYMBOL = dict(_COMPARE.values())
_ARITHMETIC: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
SIGNIFICANCE_OPS = {"<": -1, ">": 1, "!=": 0}
_GRAMMAR = "use VARIANT.METRIC, numbers, + - * /, parentheses and one comparison"


@dataclass(frozen=True)
class Ref:
    variant: str
    metric: str

    def __str__(self) -> str:
        return f"{self.variant}.{self.metric}"


@dataclass(frozen=True)
class Threshold:
    """A parsed expression: `left op right`, with the references it uses."""

    text: str
    op: str
    left: ast.expr = field(repr=False)
    right: ast.expr = field(repr=False)
    refs: tuple[Ref, ...]

    @property
    def significance(self) -> tuple[Ref, Ref] | None:
        """(X, Y) when this is the significance form `X.m op Y.m`, else None."""
        sides = [self._bare(node) for node in (self.left, self.right)]
        x, y = sides
        if x is None or y is None or x.metric != y.metric or x.variant == y.variant:
            return None
        return x, y

    def _bare(self, node: ast.expr) -> Ref | None:
        return self.refs[ref_index(node.id)] if isinstance(node, ast.Name) else None


def parse(text: str) -> Threshold:
    """Parse one expression; a malformed one is a one-line PoolbenchError naming the problem."""
    if re.search(r"\b_ref\d+_\b", text):
        _fail(text, "names of the form _refN_ are reserved")
    refs: list[Ref] = []

    def substitute(match: re.Match[str]) -> str:
        refs.append(Ref(match.group(1), match.group(2)))
        return _PLACEHOLDER.format(len(refs) - 1)

    try:
        tree = ast.parse(_REF.sub(substitute, text.strip()), mode="eval").body
    except SyntaxError:
        _fail(text, f"not a valid expression ({_GRAMMAR})")
    if isinstance(tree, ast.BoolOp):
        _fail(text, "one comparison per expression (no and/or: give each its own threshold)")
    if not isinstance(tree, ast.Compare):
        _fail(text, "needs one comparison (<, <=, >, >=, ==, !=)")
    if len(tree.ops) != 1:
        _fail(text, "one comparison per expression (no chains like a < b < c)")
    for side in (tree.left, tree.comparators[0]):
        _check_node(text, side, refs)
    threshold = Threshold(
        text.strip(), _COMPARE[type(tree.ops[0])][0], tree.left, tree.comparators[0], tuple(refs)
    )
    if threshold.significance and threshold.op not in SIGNIFICANCE_OPS:
        x, y = threshold.significance
        _fail(
            text,
            f"{x} {threshold.op} {y} compares a metric of two variants: use < or > "
            f"(significantly lower/higher) or != (significantly different), or "
            f"{x} {threshold.op} 1 * {y} to compare the raw figures",
        )
    if not refs:
        _fail(text, "names no VARIANT.METRIC")
    return threshold


def validate(threshold: Threshold, variants: Collection[str], metrics: Collection[str]) -> None:
    """Every reference names a known variant and metric, else a one-line error listing them."""
    for ref in threshold.refs:
        if ref.variant not in variants:
            _fail(
                threshold.text,
                f"unknown variant {ref.variant!r}: valid variants are {_names(variants)}",
            )
        if ref.metric not in metrics:
            _fail(
                threshold.text,
                f"unknown metric {ref.metric!r}: valid metrics are {_names(metrics)}",
            )


def compute(node: ast.expr, numbers: Sequence[float]) -> float:
    """Evaluate a node already checked by _check_node."""
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int | float)  # _check_node let numbers only through
        return float(node.value)
    if isinstance(node, ast.Name):
        return numbers[ref_index(node.id)]
    if isinstance(node, ast.UnaryOp):
        operand = compute(node.operand, numbers)
        return -operand if isinstance(node.op, ast.USub) else operand
    assert isinstance(node, ast.BinOp)
    fn = _ARITHMETIC[type(node.op)]
    return fn(compute(node.left, numbers), compute(node.right, numbers))


def _check_node(text: str, node: ast.expr, refs: Sequence[Ref]) -> None:
    """Refuse anything outside the grammar, naming it."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            _fail(text, f"{node.value!r} is not a number ({_GRAMMAR})")
    elif isinstance(node, ast.Name):
        if not re.fullmatch(r"_ref\d+_", node.id):
            _fail(text, f"{node.id!r} is not VARIANT.METRIC ({_GRAMMAR})")
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        _check_node(text, node.operand, refs)
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        _check_node(text, node.left, refs)
        _check_node(text, node.right, refs)
    else:
        shown = _restore(ast.unparse(node), refs)
        _fail(text, f"{shown!r} is not allowed ({_GRAMMAR})")


def _restore(text: str, refs: Sequence[Ref]) -> str:
    return re.sub(r"_ref(\d+)_", lambda m: str(refs[int(m.group(1))]), text)


def ref_index(name: str) -> int:
    return int(name[len("_ref") : -1])


def _names(names: Collection[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


def _fail(text: str, problem: str) -> NoReturn:
    raise PoolbenchError(f"threshold {text.strip()!r}: {problem}")
