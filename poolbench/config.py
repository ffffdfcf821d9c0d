"""Typed, validated bench configuration: scenarios/bench.toml plus command-line overrides.

Every error names the bad key and, where there is a fixed set, the valid choices, in
one line, because a user reads it in a terminal before anything has started.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from poolbench import placeholders
from poolbench.errors import PoolbenchError

PROVIDERS = ("embedded", "url", "compose")
SHAPES = ("steady", "ramp", "spike")
DEFAULT_CONFIG = Path("scenarios/bench.toml")


@dataclass(frozen=True)
class AppSettings:
    """What the app's pools are given: the knobs the seed's change is about."""

    workers: int = 1
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0


@dataclass(frozen=True)
class PostgresSettings:
    """Where the database comes from. `bindir`: run the embedded server from these binaries."""

    provider: str = "embedded"
    version: int = 18
    max_connections: int = 100
    bindir: str = ""  # e.g. /usr/lib/postgresql/15/bin: every contrib extension


@dataclass(frozen=True)
class LoadSettings:
    """How Locust drives a variant (poolbench/load.py builds the command line from it).

    `locust_args` go to the user's locustfile as they are (its own options, e.g. --hold-ms);
    poolbench's own options reach only its plugin. `ramp_s`: the ramp shape reaches all users
    in equal steps at `ramp_s`, then holds them for the rest of the load phase.
    `locust_workers` > 0: a master waits (up to `locust_workers_timeout_s`) for that many
    workers started separately, e.g. on other machines; it listens on `locust_master_bind`.
    """

    locustfile: str = "scenarios/locustfile.py"
    locust_args: tuple[str, ...] = ()
    shape: str = "steady"
    users: int = 50
    spawn_rate: float = 50.0
    ramp_s: float = 15.0
    processes: int = 1
    locust_workers: int = 0
    locust_workers_timeout_s: float = 120.0
    locust_master_bind: str = "127.0.0.1"


@dataclass(frozen=True)
class Phases:
    """Seconds per phase: warm-up (light load), load, then idle to see what stays open."""

    warmup_s: float = 5.0
    load_s: float = 45.0
    idle_s: float = 15.0


@dataclass(frozen=True)
class Engine:
    """One pool an app declares: its application_name (or "untagged") and sizes, per process."""

    name: str
    pool_size: int
    max_overflow: int


@dataclass(frozen=True)
class Variant:
    """An app to measure: a directory with `app.main:app`, or any command plus a health path.

    `env`, `cwd` and `setup` hand a third-party service its settings and migrations without a
    wrapper script; `workers` and `engines` declare what the app's own configuration does
    (its pools are its own), so the model can count connections per process.
    """

    name: str
    app_dir: str | None = None
    command: tuple[str, ...] | None = None
    health_path: str = "/ping"
    pools_path: str | None = "/debug/pools"
    label: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    setup: tuple[tuple[str, ...], ...] = ()
    setup_timeout_s: float = 300.0
    extensions: tuple[str, ...] = ()  # created by the superuser before setup
    workers: int | None = None  # declared; None: the experiment's app.workers
    engines: tuple[Engine, ...] = ()  # declared, per process; () = not declared

    def texts(self) -> list[tuple[str, str]]:
        """(where, text) of every string that may hold placeholders, for checking them."""
        where = f"variants.{self.name}"
        items = [(f"{where}.command", arg) for arg in self.command or ()]
        items += [(f"{where}.env.{key}", value) for key, value in self.env.items()]
        items += [(f"{where}.setup[{i}]", a) for i, cmd in enumerate(self.setup) for a in cmd]
        return items


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    variants: tuple[str, ...]
    app: AppSettings
    postgres: PostgresSettings
    load: LoadSettings
    phases: Phases
    repeats: int = 1


@dataclass(frozen=True)
class BenchConfig:
    path: str
    variants: dict[str, Variant]
    experiments: dict[str, Experiment]
    default_experiments: tuple[str, ...]
    quick: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- parsing


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PoolbenchError(
            f"unknown key {where}.{unknown[0]}: valid keys are {', '.join(sorted(allowed))}"
        )


def _typed(cls: type, table: dict[str, Any], where: str, base: Any = None) -> Any:
    """Build a settings dataclass from a TOML table, checking names, types and ranges."""
    defaults = base if base is not None else cls()
    allowed = set(cls.__dataclass_fields__)
    _check_keys(table, allowed, where)
    values = {}
    for key, value in table.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple:  # a list of strings in TOML
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PoolbenchError(f"{where}.{key} must be a list of strings, got {value!r}")
            value = tuple(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise PoolbenchError(
                f"{where}.{key} must be {expected.__name__}, got {type(value).__name__} {value!r}"
            )
        if isinstance(value, int | float) and value < 0:
            raise PoolbenchError(f"{where}.{key} must not be negative, got {value}")
        values[key] = value
    return replace(defaults, **values)


def _validate_experiment(exp: Experiment, variants: dict[str, Variant]) -> None:
    where = f"experiments.{exp.name}"
    if exp.postgres.provider not in PROVIDERS:
        raise PoolbenchError(
            f"{where}.postgres.provider {exp.postgres.provider!r} is not one of {', '.join(PROVIDERS)}"
        )
    if exp.load.shape not in SHAPES:
        raise PoolbenchError(
            f"{where}.load.shape {exp.load.shape!r} is not one of {', '.join(SHAPES)}"
        )
    for key, value in (
        ("app.workers", exp.app.workers),
        ("app.pool_size", exp.app.pool_size),
        ("load.users", exp.load.users),
        ("load.processes", exp.load.processes),
        ("repeats", exp.repeats),
        ("postgres.max_connections", exp.postgres.max_connections),
    ):
        if value < 1:
            raise PoolbenchError(f"{where}.{key} must be at least 1, got {value}")
    if exp.phases.load_s <= 0:
        raise PoolbenchError(f"{where}.phases.load_s must be positive, got {exp.phases.load_s}")
    if exp.load.shape == "ramp" and exp.load.ramp_s >= exp.phases.load_s:
        raise PoolbenchError(
            f"{where}.load.ramp_s ({exp.load.ramp_s:g} s) must be shorter than phases.load_s "
            f"({exp.phases.load_s:g} s): the ramp holds all users for the rest of the phase"
        )
    if exp.load.locust_workers_timeout_s <= 0:
        raise PoolbenchError(f"{where}.load.locust_workers_timeout_s must be positive")
    if exp.load.locust_workers and exp.load.processes > 1:
        raise PoolbenchError(
            f"{where}: load.locust_workers and load.processes exclude each other "
            "(start more workers instead)"
        )
    for name in exp.variants:
        if name not in variants:
            raise PoolbenchError(
                f"{where}.variants names unknown variant {name!r}: valid variants are {', '.join(sorted(variants))}"
            )


VARIANT_KEYS = {
    "app_dir", "command", "health_path", "pools_path", "label", "env", "cwd", "setup",
    "setup_timeout_s", "extensions", "workers", "pool_size", "max_overflow", "engines",
    "extends",
}  # fmt: skip
SQLALCHEMY_POOL = {"pool_size": 5, "max_overflow": 10}  # create_engine()'s defaults


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PoolbenchError(f"{where} must be a list of strings")
    return tuple(value)


def _count(table: dict[str, Any], key: str, where: str, minimum: int, default: int) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PoolbenchError(f"{where}.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _parse_env(table: Any, where: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise PoolbenchError(f'{where}.env must be a table of NAME = "value"')
    env = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise PoolbenchError(f"{where}.env.{key} must be a string or a number, got {value!r}")
        env[str(key)] = str(value)
    return env


def _parse_engines(table: dict[str, Any], where: str) -> tuple[Engine, ...]:
    """`engines = [{name, pool_size, max_overflow}, …]`, or `pool_size`/`max_overflow` alone."""
    if "engines" in table:
        if "pool_size" in table or "max_overflow" in table:
            raise PoolbenchError(
                f"{where} declares both engines and pool_size/max_overflow: put the sizes in each engine"
            )
        items = table["engines"]
        if not isinstance(items, list) or not items or not all(isinstance(e, dict) for e in items):
            raise PoolbenchError(f"{where}.engines must be a non-empty list of tables")
        engines = []
        for i, item in enumerate(items):
            at = f"{where}.engines[{i}]"
            _check_keys(item, {"name", *SQLALCHEMY_POOL}, at)
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise PoolbenchError(
                    f'{at}.name must be the engine\'s application_name, or "untagged"'
                )
            sizes = {k: _count(item, k, at, 0, d) for k, d in SQLALCHEMY_POOL.items()}
            engines.append(Engine(item["name"], **sizes))
        if len({e.name for e in engines}) < len(engines):
            raise PoolbenchError(f"{where}.engines names an engine twice")
        return tuple(engines)
    if "pool_size" in table or "max_overflow" in table:
        sizes = {k: _count(table, k, where, 0, d) for k, d in SQLALCHEMY_POOL.items()}
        return (Engine("untagged", **sizes),)
    return ()


def _parse_setup(table: dict[str, Any], where: str) -> tuple[tuple[str, ...], ...]:
    setup = table.get("setup", [])
    if not isinstance(setup, list):
        raise PoolbenchError(f"{where}.setup must be a list of commands, each a list of strings")
    commands = tuple(_strings(cmd, f"{where}.setup[{i}]") for i, cmd in enumerate(setup))
    if any(not cmd for cmd in commands):
        raise PoolbenchError(f"{where}.setup holds an empty command")
    return commands


def _extended(name: str, tables: dict[str, Any]) -> dict[str, Any]:
    """A variant's table over the one it `extends` (recursively); `env` merges key by key.

    So "the same service with 4 workers" is two lines, not a copy of its command and env.
    """
    table, chain = tables[name], [name]
    while "extends" in table:
        base = table["extends"]
        if base not in tables or base in chain:
            problem = "a cycle" if base in chain else "an unknown variant"
            raise PoolbenchError(f"variants.{chain[-1]}.extends names {problem}: {base!r}")
        chain.append(base)
        parent = tables[base]
        inherited = {k: v for k, v in parent.items() if k != "label"}  # names stay apart
        merged = {**inherited, **table, "env": {**parent.get("env", {}), **table.get("env", {})}}
        if "engines" in table:  # a declaration replaces the other form, not mixes with it
            merged = {k: v for k, v in merged.items() if k not in ("pool_size", "max_overflow")}
        elif {"pool_size", "max_overflow"} & table.keys():
            merged.pop("engines", None)
        merged.pop("extends")
        table = {**merged, **({"extends": parent["extends"]} if "extends" in parent else {})}
    return table


def _parse_variant(name: str, table: dict[str, Any]) -> Variant:
    where = f"variants.{name}"
    _check_keys(table, VARIANT_KEYS, where)
    command = table.get("command")
    if command is not None:
        command = _strings(command, f"{where}.command")
    if (table.get("app_dir") is None) == (command is None):
        raise PoolbenchError(f"{where} needs exactly one of app_dir or command")
    engines = _parse_engines(table, where)
    if engines and command is None:
        raise PoolbenchError(
            f"{where}: pool sizes of an app_dir variant come from [experiments.X.app]; "
            "declare pool_size/max_overflow/engines only for a command variant"
        )
    cwd = table.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or command is None):
        raise PoolbenchError(
            f"{where}.cwd must be a directory (a string), for a command variant only"
        )
    timeout = table.get("setup_timeout_s", Variant.setup_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise PoolbenchError(f"{where}.setup_timeout_s must be a positive number, got {timeout!r}")
    return Variant(
        name=name,
        app_dir=table.get("app_dir"),
        command=command,
        health_path=table.get("health_path", "/ping"),
        pools_path=table.get("pools_path", "/debug/pools" if command is None else None),
        label=table.get("label"),
        env=_parse_env(table.get("env", {}), where),
        cwd=cwd,
        setup=_parse_setup(table, where),
        setup_timeout_s=float(timeout),
        extensions=_strings(table.get("extensions", []), f"{where}.extensions"),
        workers=_count(table, "workers", where, 1, 1) if "workers" in table else None,
        engines=engines,
    )


SECTIONS = {
    "app": AppSettings,
    "postgres": PostgresSettings,
    "load": LoadSettings,
    "phases": Phases,
}


def _parse_experiment(name: str, table: dict[str, Any], defaults: dict[str, Any]) -> Experiment:
    where = f"experiments.{name}"
    _check_keys(table, {"description", "variants", "repeats", *SECTIONS}, where)
    sections = {
        key: _typed(cls, table.get(key, {}), f"{where}.{key}", defaults[key])
        for key, cls in SECTIONS.items()
    }
    variants = table.get("variants", defaults["variants"])
    if not isinstance(variants, list) or not variants:
        raise PoolbenchError(f"{where}.variants must be a non-empty list of variant names")
    return Experiment(
        name=name,
        description=str(table.get("description", "")),
        variants=tuple(variants),
        repeats=int(table.get("repeats", defaults["repeats"])),
        **sections,
    )


def load_config(path: Path = DEFAULT_CONFIG) -> BenchConfig:
    """Read and validate a bench file; every problem is a one-line PoolbenchError."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PoolbenchError(f"configuration file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise PoolbenchError(f"{path} is not valid TOML: {exc}") from None
    _check_keys(raw, {"defaults", "variants", "experiments", "quick"}, path.name)
    tables = raw.get("variants", {})
    variants = {
        name: _variant_paths(_parse_variant(name, _extended(name, tables)), path.parent)
        for name in tables
    }
    if not variants:
        raise PoolbenchError(f"{path} defines no [variants.NAME]")
    default_table = raw.get("defaults", {})
    _check_keys(default_table, {"experiments", "variants", "repeats", *SECTIONS}, "defaults")
    defaults: dict[str, Any] = {
        key: _typed(cls, default_table.get(key, {}), f"defaults.{key}")
        for key, cls in SECTIONS.items()
    }
    defaults["variants"] = default_table.get("variants", list(variants))
    defaults["repeats"] = default_table.get("repeats", 1)
    experiments = {
        name: _parse_experiment(name, t, defaults) for name, t in raw.get("experiments", {}).items()
    }
    for experiment in experiments.values():
        _validate_experiment(experiment, variants)
    default_experiments = tuple(default_table.get("experiments", list(experiments)))
    for name in default_experiments:
        _require(name, experiments, "experiment")
    return BenchConfig(str(path), variants, experiments, default_experiments, raw.get("quick", {}))


def _require(name: str, known: dict[str, Any], what: str) -> None:
    if name not in known:
        raise PoolbenchError(
            f"unknown {what} {name!r}: valid {what}s are {', '.join(sorted(known))}"
        )


# --------------------------------------------------------------------------- overrides


def select(
    config: BenchConfig,
    *,
    experiments: list[str] | None = None,
    variants: list[str] | None = None,
    quick: bool = False,
    repeats: int | None = None,
    load_processes: int | None = None,
    load: dict[str, Any] | None = None,
    pg_bindir: str | None = None,
) -> list[Experiment]:
    """The experiments to run, after --experiment, --variants, --quick and friends.

    Also checks every placeholder of the chosen variants (an unset `${VAR}` is an error here,
    before anything starts) and resolves relative paths against the bench file's directory.
    """
    names = experiments or (
        list(config.default_experiments[:1]) if quick else config.default_experiments
    )
    chosen = []
    for name in names:
        _require(name, config.experiments, "experiment")
        experiment = config.experiments[name]
        if variants:
            for variant in variants:
                _require(variant, config.variants, "variant")
            experiment = replace(experiment, variants=tuple(variants))
        if quick:
            experiment = apply_overrides(experiment, config.quick, "quick")
        if repeats is not None:
            experiment = replace(experiment, repeats=repeats)
        if load_processes is not None:
            experiment = replace(
                experiment, load=replace(experiment.load, processes=load_processes)
            )
        if load:  # command-line settings of the load, e.g. --locust-workers
            experiment = replace(experiment, load=replace(experiment.load, **load))
        if pg_bindir is not None:
            experiment = replace(
                experiment, postgres=replace(experiment.postgres, bindir=pg_bindir)
            )
        _validate_experiment(experiment, config.variants)
        chosen.append(_resolve_paths(experiment, Path(config.path).parent))
    for name in dict.fromkeys(v for e in chosen for v in e.variants):
        placeholders.check(config.variants[name].texts())
    return chosen


def resolve_path(path: str, base: Path) -> str:
    """A relative path is looked up beside the bench file first, then in the current directory.

    So a bench file kept with its own service can say `locustfile = "locustfile.py"`, and the
    repository's scenarios/bench.toml keeps its paths relative to the repository root.
    """
    if not path or Path(path).is_absolute():
        return path
    beside = base / path
    return str(beside.resolve()) if beside.exists() else path


def _variant_paths(variant: Variant, base: Path) -> Variant:
    return replace(
        variant,
        app_dir=resolve_path(variant.app_dir, base) if variant.app_dir else None,
        cwd=resolve_path(variant.cwd, base) if variant.cwd else None,
    )


def _resolve_paths(experiment: Experiment, base: Path) -> Experiment:
    load = replace(experiment.load, locustfile=resolve_path(experiment.load.locustfile, base))
    pg = replace(experiment.postgres, bindir=resolve_path(experiment.postgres.bindir, base))
    if pg.bindir:  # a wrong bindir is a one-line error before anything starts
        from poolbench.postgres import check_bindir

        pg = replace(pg, bindir=str(check_bindir(Path(pg.bindir))))
    return replace(experiment, load=load, postgres=pg)


def apply_overrides(experiment: Experiment, table: dict[str, Any], where: str) -> Experiment:
    """Overlay a table shaped like an experiment's sections (e.g. [quick]) onto it."""
    _check_keys(table, {"repeats", *SECTIONS}, where)
    sections = {
        key: _typed(cls, table[key], f"{where}.{key}", getattr(experiment, key))
        for key, cls in SECTIONS.items()
        if key in table
    }
    if "repeats" in table:
        sections["repeats"] = int(table["repeats"])
    return replace(experiment, **sections)
