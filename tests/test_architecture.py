"""The folder tree is the architecture: packages by stage, imports only downward, no cycles.

Every import counts — module level, inside a function, under TYPE_CHECKING — since a lazy
import is still a dependency (docs/architecture.md has the stages and the table below).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "poolbench"
COMMON = {"poolbench", "errors", "format", "redact", "options", "files"}
# what each stage may import besides the common modules; anything else is a layer leak
ALLOWED = {
    "config": set(),
    "probe": set(),  # runs inside the app's own Python: the standard library only
    "results": {"probe"},  # the probe's files: their format is the probe's
    "lint": set(),
    "infra": {"config", "results", "probe"},
    "load": {"config", "infra", "results"},
    "collector": {"config", "infra", "results"},
    "analysis": {"config", "results"},
    "report": {"config", "results", "analysis"},
    "run": {"config", "results", "lint", "infra", "load", "collector", "analysis", "report"},
    "ui": {"config", "results", "lint", "infra", "load", "collector", "analysis", "report", "run"},
    "cli": set(),
    "__main__": {"cli"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The poolbench modules a file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("poolbench"):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "poolbench"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_another_that_imports_it_back() -> None:
    assert _cycles(_graph()) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    """The check itself can fail: a two-module loop and a three-module loop are both seen."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_every_stage_imports_only_the_stages_below_it() -> None:
    leaks = []
    for module, targets in _graph().items():
        stage = _stage(module)
        if stage in COMMON:
            allowed: set[str] = set()
        else:
            assert stage in ALLOWED, f"{module}: a new stage? add it to ALLOWED and the doc"
            allowed = ALLOWED[stage]
        for target in targets:
            other = _stage(target)
            if other != stage and other not in COMMON | allowed:
                leaks.append(f"{module} -> {target}")
    assert leaks == []


@pytest.mark.parametrize("module", ["cli"])
def test_nothing_imports_the_command_line(module: str) -> None:
    importers = [m for m, targets in _graph().items() if f"poolbench.{module}" in targets]
    assert importers == ["poolbench.__main__"]


def test_the_root_holds_only_the_entry_point_and_the_common_modules() -> None:
    root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert root == ["__init__", "__main__", "cli", "errors", "files", "format", "options", "redact"]


MAX_FUNCTION_LINES = 80


def _long_functions(source: str, name: str) -> list[str]:
    """Functions (methods, nested ones) longer than MAX_FUNCTION_LINES, from `def` to their
    last line, decorators left out."""
    return [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def test_no_function_is_longer_than_80_lines() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        long += _long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))
    assert long == []


def test_a_long_function_is_found() -> None:
    """The check itself can fail: 81 lines are one too many, 80 are not, nested ones count."""
    body = "".join(f"    x{i} = {i}\n" for i in range(79))
    long = f"def f():\n{body}    return 0\n"  # 81 lines
    fine = f"def g():\n{body}"  # 80 lines
    nested = "class C:\n    def m(self):\n" + "".join(f"        x{i} = {i}\n" for i in range(80))
    assert _long_functions(long + fine + nested, "m.py") == [
        "m.py:1 f (81 lines)",
        "m.py:163 m (81 lines)",
    ]
