"""CI gates: `--fail-if` expressions checked against a run's figures and comparisons.

Grammar: one comparison (<, <=, >, >=, ==, !=) between two arithmetic expressions made of
`VARIANT.METRIC` references, numbers, + - * /, unary minus and parentheses, e.g.

    after.peak_connections > 25
    after.p95_ms > 1.2 * before.p95_ms
    after.goodput < before.goodput

It is parsed with Python's `ast` and a whitelist of node types, never evaluated by Python.
VARIANT may contain hyphens (bench-file names do): `my-app.p95_ms`; a minus between two
references needs no space (`after.x-before.x`) since a METRIC has none.

Two forms, two meanings:

- **Arithmetic** (anything but the form below): the figures are `source.value(variant,
  metric)` (what the report shows, e.g. the median over repeats), compared as numbers.
- **Significance**: the same metric of two variants, bare, with `<`, `>` or `!=` — "X.m < Y.m"
  means X is *significantly* lower than Y, decided by `source.comparison(Y, X, m)` (X against
  baseline Y), never by the raw numbers. An exact comparison (identical across repeats) decides
  by its values. An untested difference is **inconclusive**. `<=`, `>=` and `==` are refused in
  this form: "not significantly higher" would fail a gate whenever the test lacks power; write
  `X.m <= 1 * Y.m` to compare the raw figures.

Outcomes: *breached* (the condition holds: the gate fails), *passed*, *inconclusive* (a figure
missing, a division by zero, an untested difference). Inconclusive does **not** fail CI by
default — "not shown lower" is what an underpowered test says too, and a gate that fails on
every one-repeat run would be switched off — but it is printed and reported as such;
`exit_code(results, strict=True)` makes it fail. A breach exits with EXIT_THRESHOLD.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, Protocol

from poolbench.analysis.stats import Comparison
from poolbench.errors import PoolbenchError

EXIT_THRESHOLD = 3  # a threshold breached; bad input is 2, a failed run 1, interrupted 130

Outcome = Literal["breached", "passed", "inconclusive"]

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
_BY_SYMBOL = dict(_COMPARE.values())
_ARITHMETIC: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_SIGNIFICANCE_OPS = {"<": -1, ">": 1, "!=": 0}
_GRAMMAR = "use VARIANT.METRIC, numbers, + - * /, parentheses and one comparison"


class ThresholdSource(Protocol):
    """What a threshold is checked against (a run's analysis, or a compare across runs)."""

    def variants(self) -> Collection[str]: ...

    def metrics(self) -> Collection[str]: ...

    def value(self, variant: str, metric: str) -> float | None: ...

    def comparison(self, baseline: str, other: str, metric: str) -> Comparison | None:
        """`other` against `baseline` (change_pct = other vs baseline), or None if none."""
        ...


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
        return self.refs[_ref_index(node.id)] if isinstance(node, ast.Name) else None


@dataclass(frozen=True)
class ThresholdResult:
    expression: str
    outcome: Outcome
    explanation: str  # one line, with the values it was decided on
    values: dict[str, float | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "expression": self.expression,
            "outcome": self.outcome,
            "explanation": self.explanation,
            "values": dict(self.values),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ThresholdResult:
        return cls(data["expression"], data["outcome"], data["explanation"], data["values"])


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
    if threshold.significance and threshold.op not in _SIGNIFICANCE_OPS:
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


def evaluate(threshold: Threshold, source: ThresholdSource) -> ThresholdResult:
    """Decide one threshold against a source (validated first)."""
    validate(threshold, source.variants(), source.metrics())
    values = {str(ref): source.value(ref.variant, ref.metric) for ref in threshold.refs}
    if threshold.significance:
        return _significance(threshold, source, values)
    return _arithmetic(threshold, values)


def check(texts: Iterable[str], source: ThresholdSource) -> list[ThresholdResult]:
    """Parse and validate every expression before deciding any, then decide them all."""
    thresholds = [parse(text) for text in texts]
    for threshold in thresholds:
        validate(threshold, source.variants(), source.metrics())
    return [evaluate(threshold, source) for threshold in thresholds]


def exit_code(results: Sequence[ThresholdResult], *, strict: bool = False) -> int:
    """EXIT_THRESHOLD when a threshold is breached (or, when strict, inconclusive), else 0."""
    failing = {"breached", "inconclusive"} if strict else {"breached"}
    return EXIT_THRESHOLD if any(r.outcome in failing for r in results) else 0


def _significance(
    threshold: Threshold, source: ThresholdSource, values: dict[str, float | None]
) -> ThresholdResult:
    x, y = threshold.significance  # type: ignore[misc]
    result = source.comparison(y.variant, x.variant, x.metric)
    relation = {"<": "lower than", ">": "higher than"}.get(threshold.op, "different from")
    if result is None or result.direction is None:
        why = result.footnotes[0] if result and result.footnotes else "no comparison available"
        line = f"cannot tell whether {x} is significantly {relation} {y}: {why}"
        return _result(threshold, "inconclusive", line, values)
    direction = result.direction
    held = direction != 0 if threshold.op == "!=" else direction == _SIGNIFICANCE_OPS[threshold.op]
    how = "" if result.status == "exact" else "significantly "
    if held:
        line = f"{x} is {how}{relation} {y} ({_evidence(result)})"
    elif direction == 0:
        found = "equal" if result.status == "exact" else "no significant difference"
        line = f"{found} ({_evidence(result)})"
    else:
        line = f"{x} is {how}{'higher' if direction > 0 else 'lower'} ({_evidence(result)})"
    return _result(threshold, "breached" if held else "passed", line, values)


def _evidence(result: Comparison) -> str:
    change = "" if result.change_pct is None else f"{result.change_pct:+.1f} %, "
    if result.status == "exact":
        return f"{change}{_num(result.b.median)} vs {_num(result.a.median)}, exact"
    return f"{change}p = {result.p_value:.2g}, {result.test}"


def _arithmetic(threshold: Threshold, values: dict[str, float | None]) -> ThresholdResult:
    missing = [name for name, value in values.items() if value is None]
    if missing:
        return _result(threshold, "inconclusive", f"no value for {', '.join(missing)}", values)
    numbers = [values[str(ref)] for ref in threshold.refs]
    try:
        left = _compute(threshold.left, numbers)  # type: ignore[arg-type]
        right = _compute(threshold.right, numbers)  # type: ignore[arg-type]
    except ZeroDivisionError:
        return _result(threshold, "inconclusive", "division by zero", values)
    held = _BY_SYMBOL[threshold.op](left, right)
    shown = ", ".join(f"{name} = {_num(value)}" for name, value in values.items())
    line = f"{_num(left)} {threshold.op} {_num(right)} is {str(held).lower()} ({shown})"
    return _result(threshold, "breached" if held else "passed", line, values)


def _compute(node: ast.expr, numbers: Sequence[float]) -> float:
    """Evaluate a node already checked by _check_node."""
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return numbers[_ref_index(node.id)]
    if isinstance(node, ast.UnaryOp):
        operand = _compute(node.operand, numbers)
        return -operand if isinstance(node.op, ast.USub) else operand
    assert isinstance(node, ast.BinOp)
    fn = _ARITHMETIC[type(node.op)]
    return fn(_compute(node.left, numbers), _compute(node.right, numbers))


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


def _ref_index(name: str) -> int:
    return int(name[len("_ref") : -1])


def _result(
    threshold: Threshold, outcome: Outcome, why: str, values: dict[str, float | None]
) -> ThresholdResult:
    return ThresholdResult(threshold.text, outcome, f"{outcome}: {threshold.text}: {why}", values)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _names(names: Collection[str]) -> str:
    return ", ".join(sorted(names)) or "(none)"


def _fail(text: str, problem: str) -> NoReturn:
    raise PoolbenchError(f"threshold {text.strip()!r}: {problem}")
