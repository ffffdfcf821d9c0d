"""The `[variants.NAME]` tables of a bench file: an app to measure and how to run it.

Split from bench.py (which reads the rest of the file) because a bring-your-own-app
variant carries its own settings: `env`, `cwd`, `setup`, declared `workers` and pools,
`extends`. Every error names the bad key in one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

from poolbench.errors import PoolbenchError


# What a profile changes. "minimal" is the lightest instrument that still counts
# connections: 1 Hz, no memory reads, no pools polling (process counts and CPU stay, at
# memory_hz), to measure what the default collector costs the system it observes.
class CollectorProfile(StrEnum):
    """A variant's `collector`: how closely the collector looks (COLLECTOR_PROFILES)."""

    DEFAULT = "default"
    MINIMAL = "minimal"


class ProfileSettings(TypedDict, total=False):
    """What a profile changes in poolbench.collector.settings.CollectorConfig."""

    connections_hz: float
    memory: bool
    pools_url: str | None


COLLECTOR_PROFILES: dict[str, ProfileSettings] = {
    CollectorProfile.DEFAULT: {},
    CollectorProfile.MINIMAL: {"connections_hz": 1.0, "memory": False, "pools_url": None},
}


# A variant's or an experiment's name becomes a folder of the results (<experiment>/<variant>-N)
# and is printed in the terminal: letters, digits, ".", "_" and "-", starting with a letter or
# digit, at most 64 characters, never "..". A label (display only) may hold anything printable.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = (
    "a name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
    "without '..'"
)
LABEL_MAX = 64


def shown(text: str) -> str:
    """A name as an error message may print it: control characters escaped, long ones cut."""
    escaped = text.encode("unicode_escape").decode("ascii")
    return "'" + (escaped if len(escaped) <= 80 else escaped[:77] + "...") + "'"


def check_name(name: Any, where: str) -> str:
    """A variant's or experiment's name, refused in one line unless it is safe as a folder."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        text = name if isinstance(name, str) else str(name)
        raise PoolbenchError(f"{where}: bad name {shown(text)}: {NAME_RULE}")
    return name


def check_label(label: Any, where: str) -> str | None:
    """A display label: a string of printable characters, at most LABEL_MAX of them."""
    if label is None:
        return None
    if not isinstance(label, str) or not label or not label.isprintable() or len(label) > LABEL_MAX:
        raise PoolbenchError(
            f"{where} must be 1 to {LABEL_MAX} printable characters (no control characters), "
            f"got {shown(str(label))}"
        )
    return label


def finite(value: float, where: str) -> float:
    """A number from the bench file or the command line: nan and inf are refused."""
    if not math.isfinite(value):
        raise PoolbenchError(f"{where} must be a finite number, got {value}")
    return value


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
    collector: CollectorProfile = CollectorProfile.DEFAULT  # (COLLECTOR_PROFILES)
    pgbouncer: PgBouncerSettings | None = None  # the app reaches PostgreSQL through PgBouncer
    # the app may listen beyond loopback (its own bind, e.g. 0.0.0.0): recorded and warned
    # about, not refused
    listen_beyond_loopback: bool = False
    probe: bool = True  # load the pool probe into the app's Python processes (poolbench/probe)

    def texts(self) -> list[tuple[str, str]]:
        """(where, text) of every string that may hold placeholders, for checking them."""
        where = f"variants.{self.name}"
        items = [(f"{where}.command", arg) for arg in self.command or ()]
        items += [(f"{where}.env.{key}", value) for key, value in self.env.items()]
        items += [(f"{where}.setup[{i}]", a) for i, cmd in enumerate(self.setup) for a in cmd]
        return items


class PoolMode(StrEnum):
    """PgBouncer's pool_mode: when a server connection goes back to its pool."""

    SESSION = "session"
    TRANSACTION = "transaction"
    STATEMENT = "statement"


@dataclass(frozen=True)
class PgBouncerSettings:
    """`[variants.X.pgbouncer]`: PgBouncer between the app and PostgreSQL, and its sizes.

    The server-side ceiling is `default_pool_size` (+ `reserve_pool_size`) per
    database/user pair, whatever the app's pools; `max_client_conn` caps the app's side.
    `pgbouncer_bin`: the binary (default: `pgbouncer` on PATH).
    """

    pool_mode: PoolMode = PoolMode.TRANSACTION
    default_pool_size: int = 20
    max_client_conn: int = 100
    reserve_pool_size: int = 0
    reserve_pool_timeout_s: float = 5.0
    min_pool_size: int = 0
    max_db_connections: int = 0  # 0: no limit beyond default_pool_size per pair
    pgbouncer_bin: str = ""

    @property
    def server_ceiling(self) -> int:
        """The most server connections one database/user pair can get from the pooler."""
        pair = self.default_pool_size + self.reserve_pool_size
        return min(pair, self.max_db_connections) if self.max_db_connections else pair


PGBOUNCER_KEYS = {
    "pool_mode",
    "default_pool_size",
    "max_client_conn",
    "reserve_pool_size",
    "reserve_pool_timeout_s",
    "min_pool_size",
    "max_db_connections",
    "pgbouncer_bin",
}


def _parse_pgbouncer(table: Any, where: str) -> PgBouncerSettings:
    where = f"{where}.pgbouncer"
    if not isinstance(table, dict):
        raise PoolbenchError(f"{where} must be a table (pool_mode, default_pool_size, …)")
    check_keys(table, PGBOUNCER_KEYS, where)
    mode = table.get("pool_mode", PgBouncerSettings.pool_mode.value)
    if mode not in {m.value for m in PoolMode}:
        modes = ", ".join(m.value for m in PoolMode)
        raise PoolbenchError(f"{where}.pool_mode must be one of {modes}, got {mode!r}")
    base = PgBouncerSettings()
    counts = {
        key: _count(
            table,
            key,
            where,
            1 if key in ("default_pool_size", "max_client_conn") else 0,
            getattr(base, key),
        )
        for key in (
            "default_pool_size",
            "max_client_conn",
            "reserve_pool_size",
            "min_pool_size",
            "max_db_connections",
        )
    }
    timeout = table.get("reserve_pool_timeout_s", base.reserve_pool_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise PoolbenchError(
            f"{where}.reserve_pool_timeout_s must be a number >= 0, got {timeout!r}"
        )
    binary = table.get("pgbouncer_bin", "")
    if not isinstance(binary, str):
        raise PoolbenchError(f"{where}.pgbouncer_bin must be a path (a string)")
    return PgBouncerSettings(
        pool_mode=PoolMode(mode),
        reserve_pool_timeout_s=float(timeout),
        pgbouncer_bin=binary,
        **counts,
    )


def check_keys(table: Iterable[str], allowed: set[str], where: str) -> None:
    """A table's keys (`table` iterated) all among `allowed`, else a one-line error."""
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PoolbenchError(
            f"unknown key {where}.{unknown[0]}: valid keys are {', '.join(sorted(allowed))}"
        )


VARIANT_KEYS = {
    "app_dir",
    "command",
    "health_path",
    "pools_path",
    "label",
    "env",
    "cwd",
    "setup",
    "setup_timeout_s",
    "extensions",
    "workers",
    "pool_size",
    "max_overflow",
    "engines",
    "extends",
    "collector",
    "pgbouncer",
    "listen_beyond_loopback",
    "probe",
}
SQLALCHEMY_POOL = {"pool_size": 5, "max_overflow": 10}  # create_engine()'s defaults


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PoolbenchError(f"{where} must be a list of strings")
    return tuple(value)


def _count(table: Mapping[str, object], key: str, where: str, minimum: int, default: int) -> int:
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


def _parse_engines(table: Mapping[str, object], where: str) -> tuple[Engine, ...]:
    """`engines = [{name, pool_size, max_overflow}, …]`, or `pool_size`/`max_overflow` alone."""
    if "engines" in table:
        if "pool_size" in table or "max_overflow" in table:
            raise PoolbenchError(
                f"{where} declares both engines and pool_size/max_overflow: "
                "put the sizes in each engine"
            )
        items = table["engines"]
        if not isinstance(items, list) or not items or not all(isinstance(e, dict) for e in items):
            raise PoolbenchError(f"{where}.engines must be a non-empty list of tables")
        engines = []
        for i, item in enumerate(items):
            at = f"{where}.engines[{i}]"
            check_keys(item, {"name", *SQLALCHEMY_POOL}, at)
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise PoolbenchError(
                    f'{at}.name must be the engine\'s application_name, or "untagged"'
                )
            check_label(item["name"], f"{at}.name")  # shown in the terminal and the report
            sizes = {k: _count(item, k, at, 0, d) for k, d in SQLALCHEMY_POOL.items()}
            engines.append(Engine(item["name"], **sizes))
        if len({e.name for e in engines}) < len(engines):
            raise PoolbenchError(f"{where}.engines names an engine twice")
        return tuple(engines)
    if "pool_size" in table or "max_overflow" in table:
        sizes = {k: _count(table, k, where, 0, d) for k, d in SQLALCHEMY_POOL.items()}
        return (Engine("untagged", **sizes),)
    return ()


def _parse_setup(table: Mapping[str, object], where: str) -> tuple[tuple[str, ...], ...]:
    setup = table.get("setup", [])
    if not isinstance(setup, list):
        raise PoolbenchError(f"{where}.setup must be a list of commands, each a list of strings")
    commands = tuple(_strings(cmd, f"{where}.setup[{i}]") for i, cmd in enumerate(setup))
    if any(not cmd for cmd in commands):
        raise PoolbenchError(f"{where}.setup holds an empty command")
    return commands


def extended(name: str, tables: dict[str, Any]) -> dict[str, Any]:
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
        if isinstance(parent.get("pgbouncer"), dict) and isinstance(table.get("pgbouncer"), dict):
            merged["pgbouncer"] = {**parent["pgbouncer"], **table["pgbouncer"]}  # key by key
        if "engines" in table:  # a declaration replaces the other form, not mixes with it
            merged = {k: v for k, v in merged.items() if k not in ("pool_size", "max_overflow")}
        elif {"pool_size", "max_overflow"} & table.keys():
            merged.pop("engines", None)
        merged.pop("extends")
        table = {**merged, **({"extends": parent["extends"]} if "extends" in parent else {})}
    return dict(table)


def parse_variant(name: str, table: dict[str, Any]) -> Variant:
    where = f"variants.{shown(name)[1:-1]}"
    check_name(name, "variants")
    check_keys(table, VARIANT_KEYS, where)
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
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise PoolbenchError(f"{where}.setup_timeout_s must be a positive number, got {timeout!r}")
    exposed = table.get("listen_beyond_loopback", False)
    if not isinstance(exposed, bool):
        raise PoolbenchError(
            f"{where}.listen_beyond_loopback must be true or false, got {exposed!r}"
        )
    probe = table.get("probe", True)
    if not isinstance(probe, bool):
        raise PoolbenchError(f"{where}.probe must be true or false, got {probe!r}")
    collector = table.get("collector", "default")
    if not isinstance(collector, str) or collector not in COLLECTOR_PROFILES:
        raise PoolbenchError(
            f"{where}.collector {collector!r} is not one of {', '.join(COLLECTOR_PROFILES)}"
        )
    return Variant(
        name=name,
        app_dir=table.get("app_dir"),
        command=command,
        health_path=table.get("health_path", "/ping"),
        pools_path=table.get("pools_path", "/debug/pools" if command is None else None),
        label=check_label(table.get("label"), f"{where}.label"),
        env=_parse_env(table.get("env", {}), where),
        cwd=cwd,
        setup=_parse_setup(table, where),
        setup_timeout_s=float(timeout),
        extensions=_strings(table.get("extensions", []), f"{where}.extensions"),
        workers=_count(table, "workers", where, 1, 1) if "workers" in table else None,
        engines=engines,
        collector=CollectorProfile(collector),
        pgbouncer=_parse_pgbouncer(table["pgbouncer"], where) if "pgbouncer" in table else None,
        listen_beyond_loopback=exposed,
        probe=probe,
    )
