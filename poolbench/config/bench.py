"""Typed, validated bench configuration: scenarios/bench.toml plus command-line overrides.

Every error names the bad key and, where there is a fixed set, the valid choices, in
one line, because a user reads it in a terminal before anything has started. The
`[variants.NAME]` tables are parsed in config/variants.py.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from poolbench.config import placeholders
from poolbench.config.kinds import Provider, Shape
from poolbench.config.paths import check_bindir
from poolbench.config.variants import (
    Variant,
    check_keys,
    check_name,
    extended,
    finite,
    parse_variant,
)
from poolbench.errors import PoolbenchError, first_line
from poolbench.options import Overrides

PROVIDERS = tuple(Provider)
SHAPES = tuple(Shape)
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

    provider: Provider = Provider.EMBEDDED
    version: int = 18
    max_connections: int = 100
    bindir: str = ""  # e.g. /usr/lib/postgresql/15/bin: every contrib extension


@dataclass(frozen=True)
class LoadSettings:
    """How Locust drives a variant (poolbench/load/locust.py builds the command line from it).

    `locust_args` go to the user's locustfile as they are (its own options, e.g. --hold-ms);
    poolbench's own options reach only its plugin. `ramp_s`: the ramp shape reaches all users
    in equal steps at `ramp_s`, then holds them for the rest of the load phase.
    `locust_workers` > 0: a master waits (up to `locust_workers_timeout_s`) for that many
    workers started separately, e.g. on other machines; it listens on `locust_master_bind`.
    """

    locustfile: str = "scenarios/locustfile.py"
    locust_args: tuple[str, ...] = ()
    shape: Shape = Shape.STEADY
    users: int = 50
    spawn_rate: float = 50.0
    ramp_s: float = 15.0
    processes: int = 1
    locust_workers: int = 0
    locust_workers_timeout_s: float = 120.0
    locust_master_bind: str = "127.0.0.1"


@dataclass(frozen=True)
class Phases:
    """Seconds per phase: warm-up (light load), load, soak, then idle to see what stays open.

    The soak continues the load at the same, constant user count (one Locust run spans both):
    the window the leak test fits its slopes over, after the pools have filled.
    """

    warmup_s: float = 5.0
    load_s: float = 45.0
    soak_s: float = 0.0
    idle_s: float = 15.0


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
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → claim table
    sweep: dict[str, Any] = field(default_factory=dict)  # a point of a pool-size sweep
    fail_if: tuple[str, ...] = ()  # thresholds that gate CI (poolbench.analysis.thresholds)


@dataclass(frozen=True)
class BenchConfig:
    path: str
    variants: dict[str, Variant]
    experiments: dict[str, Experiment]
    default_experiments: tuple[str, ...]
    quick: Mapping[str, object] = field(default_factory=dict)  # [quick], checked when used


# --------------------------------------------------------------------------- parsing


def _typed(cls: type, table: object, where: str, base: Any = None) -> Any:
    """Build a settings dataclass from a TOML table, checking names, types and ranges."""
    if not isinstance(table, dict):
        raise PoolbenchError(f"{where} must be a table, got {type(table).__name__} {table!r}")
    defaults = base if base is not None else cls()
    allowed = {f.name for f in fields(cls)}
    check_keys(table, allowed, where)
    values: dict[str, object] = {}
    for key, value in table.items():
        expected = type(getattr(defaults, key))
        if issubclass(expected, StrEnum) and isinstance(value, str):
            # a word outside the set stays a string, for _validate_experiment to refuse where
            # the experiment got it (a [defaults] value is blamed on the experiment, as before)
            value = _member(expected, value)
            expected = type(value)
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
        if isinstance(value, float):
            finite(value, f"{where}.{key}")
        if isinstance(value, int | float) and value < 0:
            raise PoolbenchError(f"{where}.{key} must not be negative, got {value}")
        values[key] = value
    return replace(defaults, **values)


def _member(kind: type[StrEnum], word: str) -> str:
    """`word` as a member of `kind`, or as it is when it is not one."""
    return next((member for member in kind if member == word), word)


def _count(value: object, where: str) -> int:
    """A whole number from the file (repeats): a one-line error for "abc", 2.5 or true."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoolbenchError(f"{where} must be int, got {type(value).__name__} {value!r}")
    return value


def _names_list(value: object, where: str) -> tuple[str, ...]:
    """A non-empty list of names: a lone string is refused, not read letter by letter."""
    if isinstance(value, str):
        raise PoolbenchError(f"{where} must be a list of names, e.g. [{value!r}], not a string")
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PoolbenchError(f"{where} must be a non-empty list of names")
    return tuple(value)


def _validate_experiment(
    exp: Experiment, variants: dict[str, Variant], overridden: Mapping[str, str] | None = None
) -> None:
    """Check an experiment; a key set by an override (e.g. [quick]) is blamed where it was set."""
    where = f"experiments.{exp.name}"
    for section in SECTIONS:  # a command-line value (--soak nan) has not been through _typed
        settings = getattr(exp, section)
        for key, value in vars(settings).items():
            if isinstance(value, float):
                finite(
                    value, (overridden or {}).get(f"{section}.{key}") or f"{where}.{section}.{key}"
                )

    def located(key: str) -> str:
        return (overridden or {}).get(key) or f"{where}.{key}"

    if exp.postgres.provider not in PROVIDERS:
        raise PoolbenchError(
            f"{located('postgres.provider')} {exp.postgres.provider!r} "
            f"is not one of {', '.join(PROVIDERS)}"
        )
    if exp.load.shape not in SHAPES:
        raise PoolbenchError(
            f"{located('load.shape')} {exp.load.shape!r} is not one of {', '.join(SHAPES)}"
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
            raise PoolbenchError(f"{located(key)} must be at least 1, got {value}")
    if exp.phases.load_s <= 0:
        raise PoolbenchError(
            f"{located('phases.load_s')} must be positive, got {exp.phases.load_s}"
        )
    if exp.phases.soak_s > 0 and exp.load.shape == Shape.SPIKE:
        raise PoolbenchError(
            f"{located('phases.soak_s')} needs a constant load at its end: use shape steady or "
            "ramp, not spike"
        )
    if exp.load.shape == Shape.RAMP and exp.load.ramp_s >= exp.phases.load_s:
        raise PoolbenchError(
            f"{located('load.ramp_s')} ({exp.load.ramp_s:g} s) must be shorter than phases.load_s "
            f"({exp.phases.load_s:g} s): the ramp holds all users for the rest of the phase"
        )
    if exp.load.locust_workers_timeout_s <= 0:
        raise PoolbenchError(f"{located('load.locust_workers_timeout_s')} must be positive")
    if exp.load.locust_workers and exp.load.processes > 1:
        raise PoolbenchError(
            f"{where}: load.locust_workers and load.processes exclude each other "
            "(start more workers instead)"
        )
    for name in exp.variants:
        if name not in variants:
            raise PoolbenchError(
                f"{where}.variants names unknown variant {name!r}: "
                f"valid variants are {', '.join(sorted(variants))}"
            )


SECTIONS = {
    "app": AppSettings,
    "postgres": PostgresSettings,
    "load": LoadSettings,
    "phases": Phases,
}


@dataclass(frozen=True)
class _Defaults:
    """The bench file's [defaults]: what an experiment that does not say otherwise gets."""

    app: AppSettings
    postgres: PostgresSettings
    load: LoadSettings
    phases: Phases
    variants: tuple[str, ...]
    repeats: int
    fail_if: object  # as the file gives it: parse_fail_if checks it per experiment


def _parse_experiment(name: str, table: Mapping[str, object], defaults: _Defaults) -> Experiment:
    check_name(name, "experiments")
    where = f"experiments.{name}"
    check_keys(table, {"description", "variants", "repeats", "claims", "fail_if", *SECTIONS}, where)
    sections = {
        key: _typed(cls, table.get(key, {}), f"{where}.{key}", getattr(defaults, key))
        for key, cls in SECTIONS.items()
    }
    variants = (
        _names_list(table["variants"], f"{where}.variants")
        if "variants" in table
        else defaults.variants
    )
    repeats = _count(table["repeats"], f"{where}.repeats") if "repeats" in table else None
    return Experiment(
        name=name,
        description=str(table.get("description", "")),
        variants=variants,
        repeats=defaults.repeats if repeats is None else repeats,
        claims=_parse_claims(table.get("claims", {}), f"{where}.claims"),
        fail_if=parse_fail_if(table.get("fail_if", defaults.fail_if), f"{where}.fail_if"),
        **sections,
    )


CLAIM_KEYS = {"text", "metric", "metrics", "before", "after", "change_pct", "direction", "kind"}
DIRECTIONS = ("better", "lower", "higher")


def parse_fail_if(
    value: object,
    where: str,
    variants: tuple[str, ...] | None = None,
    metrics: Collection[str] | None = None,
) -> tuple[str, ...]:
    """Threshold expressions, their syntax checked now, before any run (and the variant and
    metric names they use, when `variants` and `metrics` are given: the run passes the
    analysis's metrics, which the bench file does not know)."""
    from poolbench.config.thresholds import parse, validate

    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        raise PoolbenchError(f'{where} must be a list of expressions, e.g. ["after.p95_ms < 500"]')
    for expression in value:
        try:
            threshold = parse(expression)
            names = variants if variants is not None else [r.variant for r in threshold.refs]
            known = metrics if metrics is not None else [r.metric for r in threshold.refs]
            validate(threshold, names, known)
        except PoolbenchError as exc:
            raise PoolbenchError(f"{where}: {exc}") from None
    return tuple(value)


def _parse_claims(table: Any, where: str) -> dict[str, dict[str, Any]]:
    """Claims as data (poolbench.analysis.claims): their shape checked here, the metrics they
    name by the run before it starts (analysis.metrics.check_claims), so a typo fails early."""
    if not isinstance(table, dict):
        raise PoolbenchError(f"{where} must be a table of claims ([{where}.ID])")
    for claim_id, claim in table.items():
        at = f"{where}.{claim_id}"
        if not isinstance(claim, dict):
            raise PoolbenchError(f"{at} must be a table")
        check_keys(claim, CLAIM_KEYS, at)
        if not isinstance(claim.get("text"), str):
            raise PoolbenchError(f"{at}.text must be a string (the claim as stated)")
        metrics = claim.get("metrics") or ([claim["metric"]] if "metric" in claim else [])
        if claim.get("kind") == "no_leak":
            continue
        if claim.get("kind") is not None:
            raise PoolbenchError(f"{at}.kind must be 'no_leak' when given")
        if not metrics:
            raise PoolbenchError(f"{at} needs a metric (or metrics)")
        if "direction" in claim and claim["direction"] not in DIRECTIONS:
            raise PoolbenchError(f"{at}.direction must be one of {', '.join(DIRECTIONS)}")
        forms = [
            ("before" in claim and "after" in claim),
            "change_pct" in claim,
            "direction" in claim,
        ]
        if sum(forms) != 1:
            raise PoolbenchError(
                f"{at} needs exactly one of: before and after, change_pct, direction"
            )
        for key in ("before", "after", "change_pct"):
            if key in claim and (
                isinstance(claim[key], bool) or not isinstance(claim[key], int | float)
            ):
                raise PoolbenchError(f"{at}.{key} must be a number")
            if key in claim:
                finite(float(claim[key]), f"{at}.{key}")
    return table


def load_config(path: Path = DEFAULT_CONFIG) -> BenchConfig:
    """Read and validate a bench file; every problem is a one-line PoolbenchError."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PoolbenchError(f"configuration file {path} not found") from None
    except IsADirectoryError:
        raise PoolbenchError(
            f"configuration file {path} is a directory, not a bench file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise PoolbenchError(f"configuration file {path} cannot be read: {why}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PoolbenchError(f"{path} is not valid TOML: {first_line(exc)}") from None
    check_keys(raw, {"defaults", "variants", "experiments", "quick"}, path.name)
    tables = raw.get("variants", {})
    if not isinstance(tables, dict) or not isinstance(raw.get("experiments", {}), dict):
        raise PoolbenchError(f"{path}: [variants.NAME] and [experiments.NAME] must be tables")
    for name in tables:
        check_name(name, "variants")
    for name in raw.get("experiments", {}):
        check_name(name, "experiments")
    variants = {
        name: _variant_paths(parse_variant(name, extended(name, tables)), path.parent)
        for name in tables
    }
    if not variants:
        raise PoolbenchError(f"{path} defines no [variants.NAME]")
    default_table = raw.get("defaults", {})
    check_keys(
        default_table, {"experiments", "variants", "repeats", "fail_if", *SECTIONS}, "defaults"
    )
    defaults = _Defaults(
        **{
            key: _typed(cls, default_table.get(key, {}), f"defaults.{key}")
            for key, cls in SECTIONS.items()
        },
        variants=_names_list(default_table.get("variants", list(variants)), "defaults.variants"),
        repeats=_count(default_table.get("repeats", 1), "defaults.repeats"),
        fail_if=default_table.get("fail_if", []),
    )
    experiments = {
        name: _parse_experiment(name, t, defaults) for name, t in raw.get("experiments", {}).items()
    }
    for experiment in experiments.values():
        _validate_experiment(experiment, variants)
    default_experiments = _names_list(
        default_table.get("experiments", list(experiments)), "defaults.experiments"
    )
    for name in default_experiments:
        _require(name, experiments, "experiment")
    return BenchConfig(str(path), variants, experiments, default_experiments, raw.get("quick", {}))


def _require(name: str, known: Mapping[str, object], what: str) -> None:
    if name not in known:
        raise PoolbenchError(
            f"unknown {what} {name!r}: valid {what}s are {', '.join(sorted(known))}"
        )


# --------------------------------------------------------------------------- overrides


def select(config: BenchConfig, overrides: Overrides | None = None) -> list[Experiment]:
    """The experiments to run, after --experiment, --variants, --quick and friends.

    Also checks the thresholds (the bench file's, and --fail-if) against the chosen variants,
    and every placeholder of the chosen variants (an unset `${VAR}` is an error here, before
    anything starts), and resolves relative paths against the bench file's directory.
    """
    given = overrides or Overrides()
    names = given.experiments or (
        config.default_experiments[:1] if given.quick else config.default_experiments
    )
    chosen = []
    for name in names:
        _require(name, config.experiments, "experiment")
        experiment = config.experiments[name]
        if given.variants:
            for variant in given.variants:
                _require(variant, config.variants, "variant")
            experiment = replace(experiment, variants=_distinct(config, list(given.variants)))
        overridden: dict[str, str] = {}
        if given.quick:  # claims are about the experiment's own settings, which quick changes
            experiment = replace(apply_overrides(experiment, config.quick, "quick"), claims={})
            overridden = _override_keys(config.quick, "quick")
        for setting, value, flag in given.settings():
            experiment = _overridden(experiment, setting, value)
            overridden[setting] = flag
        _validate_experiment(experiment, config.variants, overridden)
        chosen.append(_resolve_paths(experiment, Path(config.path).parent))
    for experiment in chosen:
        where = f"experiments.{experiment.name}.fail_if"
        parse_fail_if(list(experiment.fail_if), where, experiment.variants)
    _check_matched(list(given.fail_if), chosen)
    for name in dict.fromkeys(v for e in chosen for v in e.variants):
        placeholders.check(config.variants[name].texts())
    return chosen


def _overridden(experiment: Experiment, setting: str, value: object) -> Experiment:
    """The experiment with one setting ("repeats" or "section.key") replaced."""
    section, _, key = setting.rpartition(".")
    change: dict[str, Any] = {key: value}
    if section:
        change = {section: replace(getattr(experiment, section), **change)}
    return replace(experiment, **change)


def _check_matched(expressions: list[str], chosen: list[Experiment]) -> None:
    """A --fail-if applies to every experiment that has its variants: refuse one that none has
    (as poolbench.analysis.gates would, but only after the whole run)."""
    from poolbench.config.thresholds import parse

    for text in expressions:
        wanted = {ref.variant for ref in parse(text).refs}
        if not any(wanted <= set(e.variants) for e in chosen):
            known = sorted({v for e in chosen for v in e.variants})
            raise PoolbenchError(
                f"--fail-if {text!r}: no experiment has the variant(s) {', '.join(sorted(wanted))} "
                f"(variants in this run: {', '.join(known)})"
            )


def _distinct(config: BenchConfig, names: list[str]) -> tuple[str, ...]:
    """`after,after` (an A/A comparison): the second is `after_2`, the same app and label."""
    out: list[str] = []
    for name in names:
        alias, n = name, 1
        while alias in out:
            n += 1
            alias = f"{name}_{n}"
        if alias != name:
            original = config.variants[name]
            config.variants.setdefault(
                alias, replace(original, name=alias, label=original.label or name)
            )
        out.append(alias)
    return tuple(out)


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
        pg = replace(pg, bindir=str(check_bindir(Path(pg.bindir))))
    return replace(experiment, load=load, postgres=pg)


def apply_overrides(experiment: Experiment, table: Mapping[str, object], where: str) -> Experiment:
    """Overlay a table shaped like an experiment's sections (e.g. [quick]) onto it."""
    check_keys(table, {"repeats", *SECTIONS}, where)
    sections = {
        key: _typed(cls, table[key], f"{where}.{key}", getattr(experiment, key))
        for key, cls in SECTIONS.items()
        if key in table
    }
    if "repeats" in table:
        sections["repeats"] = _count(table["repeats"], f"{where}.repeats")
    return replace(experiment, **sections)


def _override_keys(table: Mapping[str, object], where: str) -> dict[str, str]:
    """ "section.key" -> where it was set, for the keys an override table sets."""
    found = {
        f"{section}.{key}": f"{where}.{section}.{key}"
        for section in SECTIONS
        if isinstance(settings := table.get(section), dict)
        for key in settings
    }
    if "repeats" in table:
        found["repeats"] = f"{where}.repeats"
    return found
