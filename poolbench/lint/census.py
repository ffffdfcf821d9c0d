"""`poolbench lint`: a static census of the places where code creates SQLAlchemy engines.

Each engine owns a connection pool, so "how many modules create engines" is the question
behind a pool fix. `grep create_async_engine` answers it badly: it misses aliased imports
(`import sqlalchemy as sa`), and counts strings, comments and unrelated functions that share
the name. This module reads the syntax tree instead. Every call is resolved through the
file's own imports, and for each call that really creates an engine the census records what
the surrounding code does with it: created once at import, cached inside a function (lazy),
created on every call and disposed (temporary), or created on every call and kept (a leak).

Limits, by design of a per-file static analysis: a factory re-exported by another module of
the project (`from app.db import create_engine`) and dynamic access (`getattr(sa, name)`)
are not followed.

Why one module of ~670 lines: resolving a call through the file's imports, following the
name it is bound to and deciding its scope are one walk over one syntax tree; split, each part
would need the walker's whole state.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from poolbench.errors import PoolbenchError

FACTORIES = {
    "create_engine": "sync",
    "engine_from_config": "sync",
    "create_async_engine": "async",
    "async_engine_from_config": "async",
}
"""The functions that create an engine (under any `sqlalchemy.*` path) and the engine kind."""

_STAR_EXPORTS = {
    "sqlalchemy": ("create_engine", "engine_from_config"),
    "sqlalchemy.engine": ("create_engine", "engine_from_config"),
    "sqlalchemy.ext.asyncio": ("create_async_engine", "async_engine_from_config"),
}
"""What `from <module> import *` binds, for the modules that export factories."""

_CACHING_DECORATORS = frozenset({"cache", "lru_cache", "alru_cache", "cached", "cached_property"})
"""A function under one of these runs once per argument set, so its engine is kept."""

MODULE_LEVEL = "<module>"
"""The `function` of a site outside any function or class, as Python names module code."""

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda


@dataclass(frozen=True)
class EngineSite:
    """One call that creates an engine, and what the code around it does with the engine."""

    path: str  # posix path relative to the scanned root
    module: str  # dotted module name, e.g. app.db for app/db/__init__.py
    line: int
    column: int
    call: str  # the factory, as SQLAlchemy names it
    kind: str  # "sync" or "async"
    scope: str  # "import", "lazy" or "call"
    function: str  # qualified name of the enclosing function or class, or MODULE_LEVEL
    disposed: bool  # the engine's name gets `.dispose()` in the same scope

    @property
    def status(self) -> str:
        """A per-call engine is temporary when disposed, a leak when kept; others live long."""
        if self.scope != "call":
            return "long-lived"
        return "temporary" if self.disposed else "leak"


@dataclass(frozen=True)
class Census:
    """Every engine site below a root, and the verdict: at most one module may own engines."""

    root: str
    sites: tuple[EngineSite, ...]
    files_scanned: int
    warnings: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()

    def is_allowed(self, module: str) -> bool:
        """Modules named by `--allow` (exactly or by fnmatch pattern) may own engines too."""
        return any(module == pattern or fnmatchcase(module, pattern) for pattern in self.allow)

    @property
    def long_lived_modules(self) -> list[str]:
        """Modules that keep an engine (and its pool) beyond one call, minus allowed ones."""
        return [module for module in self._keeping_modules() if not self.is_allowed(module)]

    @property
    def allowed_modules(self) -> list[str]:
        """Modules that keep an engine but were excused by `--allow`."""
        return [module for module in self._keeping_modules() if self.is_allowed(module)]

    @property
    def leaks(self) -> list[EngineSite]:
        """Engines created on every call and never disposed, outside allowed modules."""
        return [s for s in self.sites if s.status == "leak" and not self.is_allowed(s.module)]

    @property
    def exit_code(self) -> int:
        """1 when more than one module owns engines, a call leaks one, or a file was skipped."""
        return 1 if len(self.long_lived_modules) > 1 or self.leaks or self.warnings else 0

    @property
    def verdict(self) -> str:
        """One line a reader (or CI log) can act on."""
        modules = self.long_lived_modules
        summary = "no module creates long-lived engines"
        if modules:
            subject = "1 module creates" if len(modules) == 1 else f"{len(modules)} modules create"
            summary = f"{subject} long-lived engines: {', '.join(modules)}"
        problems = [f"{summary} (expected at most 1)"] if len(modules) > 1 else []
        if self.leaks:
            where = ", ".join(f"{s.path}:{s.line} ({s.function})" for s in self.leaks)
            noun = "connection leak" if len(self.leaks) == 1 else "connection leaks"
            problems.append(
                f"{len(self.leaks)} {noun}, an engine created on every call and never disposed: "
                f"{where}"
            )
        if self.warnings:  # a census with files it could not read vouches for nothing
            skipped = ", ".join(warning.split(":", 1)[0] for warning in self.warnings)
            noun = "file" if len(self.warnings) == 1 else "files"
            problems.append(
                f"{summary}, but {len(self.warnings)} {noun} could not be analysed: {skipped}"
                if not problems
                else f"{len(self.warnings)} {noun} could not be analysed: {skipped}"
            )
        return "FAIL: " + "; ".join(problems) if problems else f"OK: {summary}"

    def _keeping_modules(self) -> list[str]:
        return sorted({site.module for site in self.sites if site.status != "temporary"})


# --- analysis of one file ---------------------------------------------------------------


@dataclass
class _Site:
    """A site while its file is being read: storing and disposing are found later."""

    line: int
    column: int
    call: str
    function: str
    in_function: bool
    cached: bool
    persisted: bool = False
    disposed: bool = False

    @property
    def scope(self) -> str:
        if not self.in_function:
            return "import"
        return "lazy" if self.persisted or self.cached else "call"


@dataclass
class _Scope:
    """A module, class or function body: its import bindings and which names hold engines."""

    kind: str  # "module", "class" or "function"
    qualname: str
    cached: bool = False
    names: dict[str, str | None] = field(default_factory=dict)  # name -> qualified import
    holders: dict[str, frozenset[int]] = field(default_factory=dict)  # name -> site indexes
    outer_names: set[str] = field(default_factory=set)  # declared global or nonlocal

    def child_qualname(self, name: str) -> str:
        """Python's __qualname__ of a function or class defined in this scope."""
        if self.kind == "module":
            return name
        if self.kind == "class":
            return f"{self.qualname}.{name}"
        return f"{self.qualname}.<locals>.{name}"


@dataclass
class _Flow:
    """What an expression being visited creates and reads: the engines it can carry."""

    sites: set[int] = field(default_factory=set)
    loads: set[str] = field(default_factory=set)


class _FileVisitor(ast.NodeVisitor):
    """One pass over a module's tree that resolves calls and follows engines into names.

    Function bodies are visited after the scope that defines them (as pyflakes does), so
    they see the module's final imports, the way they do when they run.
    """

    def __init__(self) -> None:
        self.sites: list[_Site] = []
        self._chain: list[_Scope] = [_Scope("module", "")]
        self._flows: list[_Flow] = []
        self._pending: deque[tuple[_FunctionNode, list[_Scope], bool]] = deque()

    def run(self, tree: ast.Module) -> list[_Site]:
        """Visit the module, then every function body, nested ones included."""
        for statement in tree.body:
            self.visit(statement)
        while self._pending:
            self._visit_function_body(*self._pending.popleft())
        return self.sites

    # traversal: the census visits every node of every file, so dispatch is cached per type
    # and leaves that cannot matter (contexts, operators, constants) are not entered

    def visit(self, node: ast.AST) -> None:
        method = _DISPATCH.get(type(node))
        if method is None:
            method = _DISPATCH.setdefault(
                type(node), getattr(_FileVisitor, f"visit_{type(node).__name__}", _descend)
            )
        method(self, node)

    def generic_visit(self, node: ast.AST) -> None:
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST) and not isinstance(item, _LEAVES):
                        self.visit(item)
            elif isinstance(value, ast.AST) and not isinstance(value, _LEAVES):
                self.visit(value)

    # names and calls

    def _lookup(self, name: str) -> str | None:
        """The import path `name` stands for here; None for a local; builtins if unbound."""
        current = self._chain[-1]
        for scope in reversed(self._chain):
            if scope.kind == "class" and scope is not current:
                continue  # class bodies are not visible from their methods
            if name in scope.names:
                return scope.names[name]
        return f"builtins.{name}"

    def _qualify(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self._lookup(node.id)
        if isinstance(node, ast.Attribute):
            base = self._qualify(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        qualified = self._qualify(node.func)
        if qualified == "builtins.setattr" and len(node.args) == 3 and not node.keywords:
            for child in (node.func, *node.args[:2]):
                self.visit(child)
            self._mark(self._flow(node.args[2]), persisted=True)
        else:
            self.generic_visit(node)
        factory = _factory(qualified)
        if factory:
            self._add_site(node, factory)

    def _add_site(self, node: ast.Call, factory: str) -> None:
        owners = [scope for scope in self._chain if scope.kind != "module"]
        functions = [scope for scope in owners if scope.kind == "function"]
        self.sites.append(
            _Site(
                line=node.lineno,
                column=node.col_offset,
                call=factory,
                function=owners[-1].qualname if owners else MODULE_LEVEL,
                in_function=bool(functions),
                cached=bool(functions) and functions[-1].cached,
            )
        )
        if self._flows:
            self._flows[-1].sites.add(len(self.sites) - 1)

    def visit_Name(self, node: ast.Name) -> None:
        if self._flows and isinstance(node.ctx, ast.Load):
            self._flows[-1].loads.add(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # `engine.dispose()`, `await engine.dispose()` and `atexit.register(engine.dispose)`
        if node.attr == "dispose" and isinstance(node.value, ast.Name):
            self._mark(self._chain[-1].holders.get(node.value.id, ()), disposed=True)
        self.generic_visit(node)

    # imports

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self._bind(alias.asname, alias.name)
            else:
                head = alias.name.partition(".")[0]
                self._bind(head, head)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module if not node.level else None  # relative imports are project code
        for alias in node.names:
            if alias.name == "*":
                for name in _STAR_EXPORTS.get(module or "", ()):
                    self._bind(name, f"{module}.{name}")
            else:
                qualified = f"{module}.{alias.name}" if module else None
                self._bind(alias.asname or alias.name, qualified)

    def _bind(self, name: str, qualified: str | None) -> None:
        self._chain[-1].names[name] = qualified

    # definitions: bodies of functions wait until their defining scope is complete

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for child in (*node.decorator_list, *node.args.defaults, *node.args.kw_defaults):
            if child is not None:
                self.visit(child)
        cached = any(_last_name(d) in _CACHING_DECORATORS for d in node.decorator_list)
        self._bind(node.name, None)
        self._pending.append((node, [*self._chain], cached))

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for child in (*node.args.defaults, *node.args.kw_defaults):
            if child is not None:
                self.visit(child)
        self._pending.append((node, [*self._chain], False))

    def _visit_function_body(self, node: _FunctionNode, chain: list[_Scope], cached: bool) -> None:
        name = "<lambda>" if isinstance(node, ast.Lambda) else node.name
        scope = _Scope("function", chain[-1].child_qualname(name), cached=cached)
        arguments = node.args
        for arg in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
            scope.names[arg.arg] = None
        for star in (arguments.vararg, arguments.kwarg):
            if star is not None:
                scope.names[star.arg] = None
        self._chain = [*chain, scope]
        for statement in [node.body] if isinstance(node, ast.Lambda) else node.body:
            self.visit(statement)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for child in (*node.decorator_list, *node.bases, *node.keywords):
            self.visit(child)
        self._chain.append(_Scope("class", self._chain[-1].child_qualname(node.name)))
        for statement in node.body:
            self.visit(statement)
        self._chain.pop()
        self._bind(node.name, None)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        self._chain[-1].outer_names.update(node.names)

    visit_Nonlocal = visit_Global

    # bindings: follow engines into names, and notice when they outlive the call

    def visit_Assign(self, node: ast.Assign) -> None:
        pairs = _pairs(node.targets[0], node.value) if len(node.targets) == 1 else None
        if pairs:
            for target, value in pairs:
                self._store(target, self._flow(value), value)
            return
        flow = self._flow(node.value)
        for target in node.targets:
            self._store(target, flow, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._store(node.target, self._flow(node.value), node.value)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self._store(node.target, self._flow(node.value), node.value)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self._store(node.target, self._flow(node.iter), None)
        for statement in (*node.body, *node.orelse):
            self.visit(statement)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            flow = self._flow(item.context_expr)
            if item.optional_vars is not None:
                self._store(item.optional_vars, flow, None)
        for statement in node.body:
            self.visit(statement)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self._bind(node.name, None)
        for statement in node.body:
            self.visit(statement)

    def _flow(self, node: ast.expr) -> frozenset[int]:
        """Visit `node` and return the engine sites its value can carry."""
        frame = _Flow()
        self._flows.append(frame)
        self.visit(node)
        self._flows.pop()
        if self._flows:
            self._flows[-1].sites |= frame.sites
            self._flows[-1].loads |= frame.loads
        holders = self._chain[-1].holders
        carried = set(frame.sites)
        for name in frame.loads & holders.keys():
            carried |= holders[name]
        return frozenset(carried)

    def _store(self, target: ast.expr, flow: frozenset[int], value: ast.expr | None) -> None:
        if isinstance(target, ast.Name):
            self._store_name(target.id, flow, value)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._store(element, flow, None)
        elif isinstance(target, ast.Starred):
            self._store(target.value, flow, None)
        else:  # an attribute (f.engine, self.engine, app.state.engine) or a subscript
            self._mark(flow, persisted=True)
            self.visit(target)

    def _store_name(self, name: str, flow: frozenset[int], value: ast.expr | None) -> None:
        scope = self._chain[-1]
        # `make = sa.create_engine` makes `make` an alias of the factory
        is_reference = isinstance(value, ast.Name | ast.Attribute)
        scope.names[name] = self._qualify(value) if is_reference and value is not None else None
        if flow:
            scope.holders[name] = flow
        else:
            scope.holders.pop(name, None)
        if name in scope.outer_names:
            self._mark(flow, persisted=True)

    def _mark(
        self, indexes: Iterable[int], persisted: bool = False, disposed: bool = False
    ) -> None:
        for index in indexes:
            site = self.sites[index]
            site.persisted |= persisted
            site.disposed |= disposed


_LEAVES = (ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop, ast.Constant)
_DISPATCH: dict[type, Callable[[_FileVisitor, Any], None]] = {}


def _descend(visitor: _FileVisitor, node: ast.AST) -> None:
    visitor.generic_visit(node)


def _factory(qualified: str | None) -> str | None:
    """The factory a resolved call path names, if it is one of SQLAlchemy's."""
    if not qualified or not qualified.startswith("sqlalchemy."):
        return None
    name = qualified.rpartition(".")[2]
    return name if name in FACTORIES else None


def _last_name(node: ast.expr) -> str:
    """`lru_cache` for `@lru_cache`, `@functools.lru_cache` and `@lru_cache(maxsize=1)`."""
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _pairs(target: ast.expr, value: ast.expr) -> list[tuple[ast.expr, ast.expr]] | None:
    """`a, b = x, y`: pair each name with its own value, so disposing `a` says nothing of `b`."""
    if not isinstance(target, ast.Tuple | ast.List) or not isinstance(value, ast.Tuple | ast.List):
        return None
    elements = (*target.elts, *value.elts)
    if len(target.elts) != len(value.elts) or any(isinstance(e, ast.Starred) for e in elements):
        return None
    return list(zip(target.elts, value.elts, strict=True))


# --- the tree of files --------------------------------------------------------------------


def _python_files(root: Path) -> Iterator[Path]:
    """Every *.py below root in a stable order, without hidden dirs, caches or virtualenvs."""
    if root.is_file():
        yield root
        return
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(name for name in dirnames if not _skipped_dir(directory, name))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(directory, name)


def _skipped_dir(parent: str, name: str) -> bool:
    if name.startswith(".") or name == "__pycache__":
        return True
    return os.path.isfile(os.path.join(parent, name, "pyvenv.cfg"))  # a venv, whatever its name


def _package_prefix(directory: Path) -> list[str]:
    """Package names above the root: `app` when the root itself is the package `app`."""
    names: list[str] = []
    directory = directory.resolve()
    while directory.name and (directory / "__init__.py").is_file():
        names.append(directory.name)
        directory = directory.parent
    return names[::-1]


def _module_name(relative: str, prefix: list[str]) -> str:
    """`app/core/db.py` -> `app.core.db`; `app/db/__init__.py` -> `app.db`."""
    parts = relative.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([*prefix, *parts]) or "__init__"


def _census_file(file: Path, relative: str, module: str) -> tuple[list[EngineSite], str | None]:
    """The sites of one file, or a warning when the file cannot be read or parsed."""
    try:
        tree = ast.parse(file.read_bytes(), filename=relative)
        found = _FileVisitor().run(tree)
    except SyntaxError as error:
        return [], f"{relative}:{error.lineno or '?'}: syntax error ({error.msg}); file skipped"
    except (OSError, ValueError) as error:
        return [], f"{relative}: unreadable ({error}); file skipped"
    except RecursionError:
        return [], f"{relative}: nested too deeply to analyse; file skipped"
    found.sort(key=lambda site: (site.line, site.column))
    sites = [
        EngineSite(
            path=relative,
            module=module,
            line=site.line,
            column=site.column,
            call=site.call,
            kind=FACTORIES[site.call],
            scope=site.scope,
            function=site.function,
            disposed=site.disposed,
        )
        for site in found
    ]
    return sites, None


def census(path: Path, allow: Sequence[str] = ()) -> Census:
    """Find every call that creates an SQLAlchemy engine in the Python files below `path`."""
    root = Path(path)
    if not root.exists():
        raise PoolbenchError(f"no such file or directory: {path}")
    base = root if root.is_dir() else root.parent
    prefix = _package_prefix(base)
    sites: list[EngineSite] = []
    warnings: list[str] = []
    scanned = 0
    for file in _python_files(root):
        scanned += 1
        relative = file.relative_to(base).as_posix()
        found, warning = _census_file(file, relative, _module_name(relative, prefix))
        sites.extend(found)
        if warning:
            warnings.append(warning)
    return Census(
        root=str(path),
        sites=tuple(sites),
        files_scanned=scanned,
        warnings=tuple(warnings),
        allow=(allow,) if isinstance(allow, str) else tuple(allow),
    )


# --- output ---------------------------------------------------------------------------------


def format_text(result: Census) -> str:
    """A table of the sites, the leaks and warnings, and the verdict as the last line."""
    lines = [
        f"Engine census of {result.root}: {_count(result.files_scanned, 'file')} scanned, "
        f"{_count(len(result.sites), 'engine-creating call')}"
    ]
    if result.sites:
        lines += ["", *_table(result)]
    if result.leaks:
        lines += ["", "Connection leaks (a new engine on every call, never disposed):"]
        lines += [f"  {s.path}:{s.line} in {s.function} ({s.module})" for s in result.leaks]
    if result.allowed_modules:
        lines += ["", f"Allowed by --allow: {', '.join(result.allowed_modules)}"]
    if result.warnings:
        lines += ["", "Warnings:", *(f"  {warning}" for warning in result.warnings)]
    lines += ["", result.verdict]
    return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _table(result: Census) -> list[str]:
    header = ("MODULE", "LINE", "KIND", "SCOPE", "FUNCTION", "DISPOSED", "STATUS")
    rows = [header] + [
        (
            site.module,
            str(site.line),
            site.kind,
            site.scope,
            site.function,
            "yes" if site.disposed else "no",
            site.status + (" (allowed)" if result.is_allowed(site.module) else ""),
        )
        for site in result.sites
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return [
        "  ".join(
            cell.rjust(width) if column == 1 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def census_data(result: Census) -> dict[str, object]:
    """The census as plain data with stable keys (what census.json and --format json hold)."""
    return {
        "root": result.root,
        "files_scanned": result.files_scanned,
        "sites": [_site_json(site) for site in result.sites],
        "long_lived_modules": result.long_lived_modules,
        "allowed_modules": result.allowed_modules,
        "leaks": [_site_json(site) for site in result.leaks],
        "warnings": list(result.warnings),
        "verdict": result.verdict,
        "exit_code": result.exit_code,
    }


def format_json(result: Census) -> str:
    """The census for machines; the keys are stable."""
    return json.dumps(census_data(result), indent=2)


def _site_json(site: EngineSite) -> dict[str, object]:
    return {**asdict(site), "status": site.status}


# --- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `lint` options, for a standalone parser or a subcommand of `poolbench`."""
    parser.add_argument("path", metavar="PATH", type=Path, help="directory (or file) to scan")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--allow",
        metavar="MODULE",
        action="extend",
        nargs="+",
        help="module (exact dotted name or fnmatch pattern) that may also own engines",
    )


def run(args: argparse.Namespace) -> int:
    """Print the census of `args.path`; 0 when fine, 1 on a finding, 2 on a usage error."""
    result = census(args.path, args.allow or ())
    print(format_json(result) if args.format == "json" else format_text(result))
    return result.exit_code
