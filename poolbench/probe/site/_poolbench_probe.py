"""poolbench's pool probe, inside the app's own process: what waits for a connection, and how long.

Loaded by the `sitecustomize` next to it when POOLBENCH_PROBE_DIR is set. It imports nothing
heavy: it waits for the app to import SQLAlchemy (a meta-path hook), then wraps three places
once, at class level, so every alias of `create_engine` is covered:

- `Dialect.engine_created`: create_engine() made an engine; its creation site is the first
  frame on the stack outside SQLAlchemy (module:line, the identity `poolbench lint` gives). Its
  pool's settings are recorded, its pool events are listened to, and, when the app sets no
  `application_name`, one naming the site is added to each new connection (`do_connect`).
- `Pool.connect`: a checkout. **Wait time** is measured from the call (the request for a
  connection) to its return (the connection handed out): queueing for a free connection,
  opening a new one, pre-ping and any reconnect are all in it. **Use time** runs from that
  return to the pool's `checkin` event. A `TimeoutError` (or any other failure) is counted
  with the time it waited.
- pool events `connect` (with `do_connect` for its create time), `close`, `invalidate`,
  `soft_invalidate`, `detach`, `close_detached`.

Engines created at one site share one state (per-call engines of a health check are one
engine of that site). Every checkout is written to `<pid>.bin` (fixed 20-byte records, so
percentiles are exact, not from samples); every `POOLBENCH_PROBE_INTERVAL_S` (0.1 s) a
background thread writes what changed (checked out, idle, overflow, waiters, their maxima over
the interval, cumulative counters) to `<pid>.jsonl`. poolbench/results/pool_probe.py reads both.

Must never break the app: every hook swallows its own exceptions and logs the first one to
stderr. Stays Python 3.8-compatible and standard-library only: it runs in the app's Python.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import struct
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

if TYPE_CHECKING:  # types only: at run time the probe imports nothing but the standard library
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from types import FrameType, ModuleType

    from sqlalchemy.engine import Dialect, Engine
    from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection

    Site = tuple[str, int, str]  # module, line, file
    Record = tuple[float, float, float, int, int]  # RECORD's fields

DIR_ENV = "POOLBENCH_PROBE_DIR"
INTERVAL_ENV = "POOLBENCH_PROBE_INTERVAL_S"
SCHEMA = 1
RECORD = struct.Struct("<dffHH")  # t (wall, request), a, b (seconds), engine id, kind
KIND_CHECKOUT, KIND_TIMEOUT, KIND_ERROR, KIND_CONNECT = 0, 1, 2, 3
OPENED = 0x100  # on a checkout's kind: it opened a new connection (its wait includes that)
NAME_MAX = 63  # PostgreSQL keeps NAMEDATALEN - 1 bytes of application_name
HEARTBEAT_S = 1.0
_LIBRARY_PREFIXES = ("sqlalchemy", "sqlmodel", "_poolbench_probe")
_NAN = float("nan")

_logged: list[str] = []


def log_once(what: str, exc: BaseException) -> None:
    """The probe's first failure goes to stderr; later ones are silent (the app goes on)."""
    if not _logged:
        _logged.append(what)
        with contextlib.suppress(Exception):
            sys.stderr.write(f"poolbench probe: {what} failed ({exc!r}); app unaffected\n")


# ------------------------------------------------------------------ creation site


def creation_site(frame: FrameType | None) -> Site:
    """(module, line, file) of the first frame outside SQLAlchemy and the probe."""
    while frame is not None:
        module: str = frame.f_globals.get("__name__") or "?"
        if not module.startswith(_LIBRARY_PREFIXES):
            spec = frame.f_globals.get("__spec__")
            if module == "__main__" and spec is not None and spec.name:
                module = spec.name
            return module, _call_line(frame), frame.f_code.co_filename
        frame = frame.f_back
    return "?", 0, ""


def _call_line(frame: FrameType) -> int:
    """The line the call starts on (a multi-line call: its first line, as lint counts)."""
    positions = getattr(frame.f_code, "co_positions", None)  # Python 3.11+
    if positions is not None:
        try:
            for i, pos in enumerate(positions()):
                if i == frame.f_lasti // 2:
                    line: int = pos[0] or frame.f_lineno
                    return line
        except Exception:
            pass
    return frame.f_lineno


def site_name(module: str, line: int) -> str:
    """`module:line`, cut from the left to fit PostgreSQL's application_name."""
    name = f"{module}:{line}"
    return name if len(name) <= NAME_MAX else "…" + name[-(NAME_MAX - 3) :]


# ------------------------------------------------------------------ per-engine state


class EngineState:
    """One creation site in this process: live gauges, counters, checkouts in flight."""

    def __init__(self, eid: int, site: Site, settings: dict[str, Any]) -> None:
        self.id = eid
        self.site = site
        self.settings = settings
        self.pool_size: int = settings.get("pool_size") or 0
        self.lock = threading.Lock()
        self.out = self.pending = self.out_max = self.pending_max = self.open = 0
        self.counts = dict.fromkeys(
            (
                "checkouts",
                "connects",
                "closes",
                "closes_detached",
                "detaches",
                "invalidations",
                "soft_invalidations",
                "pre_ping_failures",
                "timeouts",
                "errors",
                "engines",
            ),
            0,
        )
        self.in_use: dict[ConnectionPoolEntry, tuple[float, float, float, int]] = {}
        # record -> (t_wall, wait_s, t_out, kind)
        self.connecting: dict[ConnectionPoolEntry, tuple[float, float]] = {}
        # record -> (time, perf_counter) at do_connect
        self.opened: set[ConnectionPoolEntry] = set()  # connected since their checkout began
        self.named = False
        self.last: dict[str, Any] | None = None  # the last sample written, to skip unchanged ones
        self.last_t = 0.0

    def sample(self, t: float) -> dict[str, Any] | None:
        """This interval's gauges and maxima (reset), or None when nothing changed."""
        with self.lock:
            out, pending = self.out, self.pending
            out_max, pending_max = self.out_max, self.pending_max
            self.out_max, self.pending_max = out, pending
            opened = self.open
        values = {
            "out": out,
            "idle": max(0, opened - out),
            "open": opened,
            "overflow": max(0, out - self.pool_size) if self.settings.get("queue") else None,
            "pending": pending,
            "connecting": len(self.connecting),
            "out_max": out_max,
            "pending_max": pending_max,
            **self.counts,
        }
        if values == self.last and t - self.last_t < HEARTBEAT_S:
            return None
        self.last, self.last_t = values, t
        return {"type": "sample", "t": round(t, 4), "engine": self.id, **values}


# ------------------------------------------------------------------ the probe


class Probe:
    """The process's engines and its two files, flushed by a daemon thread."""

    def __init__(self, directory: str, interval: float) -> None:
        self.directory = directory
        self.interval = interval
        self.states: dict[tuple[str, int], EngineState] = {}  # (module, line) -> its state
        self.records: deque[Record] = deque()  # packed by the flusher
        self.io_lock = threading.Lock()
        self.pid: int | None = None
        self.files: tuple[TextIO, BinaryIO] | None = None
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()

    def state_for(self, site: Site, settings: dict[str, Any]) -> EngineState:
        with self.io_lock:
            state = self.states.get(site[:2])
            if state is None:
                state = EngineState(len(self.states) + 1, site, settings)
                self.states[site[:2]] = state
                self._open()
                self._write_line({"type": "engine", "engine": state.id, **_engine_line(state)})
            state.counts["engines"] += 1
        return state

    def _open(self) -> None:
        """Files and thread on the first engine (a process without engines writes nothing)."""
        if self.files is not None and self.pid == os.getpid():
            return
        self.pid = os.getpid()
        os.makedirs(self.directory, exist_ok=True)
        base = os.path.join(self.directory, str(self.pid))
        self.files = (open(base + ".jsonl", "a", encoding="utf-8"), open(base + ".bin", "ab"))  # noqa: SIM115 - open for the life of the process
        self._write_line(
            {
                "type": "process",
                "schema": SCHEMA,
                "pid": self.pid,
                "ppid": os.getppid(),
                "t": time.time(),
                "python": sys.version.split()[0],
                "sqlalchemy": _sa_version(),
                "interval_s": self.interval,
                "record": RECORD.format,
            }
        )
        self.stop.clear()
        self.thread = thread = threading.Thread(
            target=self._run, name="poolbench-probe", daemon=True
        )
        thread.start()

    def _open_files(self) -> tuple[TextIO, BinaryIO]:
        if self.files is None:  # written to only once _open opened them
            raise RuntimeError("the probe's files are not open")
        return self.files

    def _write_line(self, obj: dict[str, Any]) -> None:
        self._open_files()[0].write(json.dumps(obj, separators=(",", ":")) + "\n")

    def record(self, t: float, a: float, b: float, engine: int, kind: int) -> None:
        self.records.append((t, a, b, engine, kind))

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:
                log_once("writing its files", exc)

    def flush(self, final: bool = False) -> None:
        with self.io_lock:
            if self.files is None:
                return
            t = time.time()
            for state in list(self.states.values()):
                line = state.sample(t)
                if line is None and final and state.last is not None:
                    line = {"type": "sample", "t": round(t, 4), "engine": state.id, **state.last}
                if line is not None:
                    self._write_line(line)
            self._write_records()
            if final:
                self._write_line({"type": "end", "t": time.time()})
            self.files[0].flush()
            self.files[1].flush()

    def _write_records(self) -> None:
        records, pack, chunk = self.records, RECORD.pack, []
        for _ in range(len(records)):
            chunk.append(pack(*records.popleft()))
        if chunk:
            self._open_files()[1].write(b"".join(chunk))

    def name_line(self, state: EngineState, name: str, source: str) -> None:
        with self.io_lock:
            if self.files is not None:
                self._write_line(
                    {
                        "type": "application_name",
                        "engine": state.id,
                        "name": name,
                        "source": source,
                        "t": time.time(),
                    }
                )

    def after_fork(self) -> None:
        """A forked child starts its own files; its engines start from nothing."""
        self.io_lock = threading.Lock()
        self.files, self.thread, self.records = None, None, deque()
        self.stop = threading.Event()
        for state in self.states.values():
            state.lock = threading.Lock()
            state.out = state.pending = state.out_max = state.pending_max = state.open = 0
            state.in_use, state.connecting, state.named, state.last = {}, {}, False, None
            state.opened = set()
            state.counts = dict.fromkeys(state.counts, 0)
        if self.states:
            with self.io_lock:
                self._open()
                for state in self.states.values():
                    self._write_line({"type": "engine", "engine": state.id, **_engine_line(state)})

    def close(self) -> None:
        self.stop.set()
        try:
            self.flush(final=True)
            if self.files is not None:
                for f in self.files:
                    f.close()
                self.files = None
        except Exception as exc:
            log_once("closing its files", exc)


def _engine_line(state: EngineState) -> dict[str, Any]:
    module, line, path = state.site
    return {
        "site": f"{module}:{line}",
        "module": module,
        "line": line,
        "file": path,
        **state.settings,
    }


def _sa_version() -> str:
    module = sys.modules.get("sqlalchemy")
    return getattr(module, "__version__", "?")


PROBE: Probe | None = None


def _probe() -> Probe:
    """The process's probe; the hooks run only once `start` made it."""
    if PROBE is None:
        raise RuntimeError("the pool probe is not started")
    return PROBE


# ------------------------------------------------------------------ hooks


def _pool_settings(engine: Engine) -> dict[str, Any]:
    pool, url = engine.pool, engine.url
    queue = hasattr(pool, "_max_overflow") and hasattr(pool, "checkedin")
    size: int | None = (
        pool.size()  # type: ignore[attr-defined]  # duck-typed: a queue pool (QueuePool's kin)
        if queue
        else (1 if type(pool).__name__ == "StaticPool" else None)
    )
    max_overflow: int | None = getattr(pool, "_max_overflow", None) if queue else None
    return {
        "pool_class": type(pool).__name__,
        "queue": queue,
        "pool_size": size,
        "max_overflow": max_overflow,
        "ceiling": (
            (size + max_overflow)
            if size is not None and max_overflow is not None and max_overflow >= 0
            else size
        ),
        "pool_timeout": getattr(pool, "_timeout", None) if queue else None,
        "pool_recycle": getattr(pool, "_recycle", None),
        "pool_pre_ping": bool(getattr(pool, "_pre_ping", False)),
        "driver": url.drivername,
        "database": url.database,
        "user": url.username,
        "host": url.host,
        "port": url.port,
        "dialect": engine.dialect.name,
    }


def register_engine(engine: Engine, frame: FrameType | None) -> None:
    """Attach an engine's pool to the state of its creation site; listen to its events."""
    from sqlalchemy import event

    site = creation_site(frame)
    state = _probe().state_for(site, _pool_settings(engine))
    engine.pool._poolbench_state = state  # type: ignore[attr-defined]  # the probe's own mark on SQLAlchemy's pool
    for name, fn in _pool_listeners(state).items():
        event.listen(engine, name, fn)
    if engine.dialect.name == "postgresql":
        event.listen(engine, "do_connect", _do_connect(state, site_name(*site[:2])))
    else:
        event.listen(engine, "do_connect", _do_connect(state, None))
    event.listen(engine, "engine_disposed", _reattach(state))


def _guard(what: str, fn: Callable[..., None]) -> Callable[..., None]:
    def guarded(*args: object) -> None:
        try:
            fn(*args)
        except Exception as exc:
            log_once(what, exc)

    return guarded


def _pool_listeners(state: EngineState) -> dict[str, Callable[..., None]]:
    perf, probe = time.perf_counter, _probe()

    def checkin(_dbapi: object, rec: ConnectionPoolEntry) -> None:
        started = state.in_use.pop(rec, None)
        if started is None:
            return
        t_wall, wait, t_out, kind = started
        with state.lock:
            state.out -= 1
        probe.record(t_wall, wait, perf() - t_out, state.id, kind)

    def connect(_dbapi: object, rec: ConnectionPoolEntry) -> None:
        began = state.connecting.pop(rec, None)
        state.opened.add(rec)
        with state.lock:
            state.open += 1
            state.counts["connects"] += 1
        if began is not None:
            probe.record(began[0], perf() - began[1], 0.0, state.id, KIND_CONNECT)

    def close(_dbapi: object, _rec: ConnectionPoolEntry) -> None:
        with state.lock:
            state.open -= 1
            state.counts["closes"] += 1

    def invalidate(_dbapi: object, rec: ConnectionPoolEntry, _exc: object) -> None:
        with state.lock:
            state.counts["invalidations"] += 1
            if rec not in state.in_use and state.settings.get("pool_pre_ping"):
                state.counts["pre_ping_failures"] += 1  # invalidated while being checked out

    def soft_invalidate(_dbapi: object, _rec: ConnectionPoolEntry, _exc: object) -> None:
        with state.lock:
            state.counts["soft_invalidations"] += 1

    def detach(_dbapi: object, rec: ConnectionPoolEntry) -> None:
        checkin(_dbapi, rec)  # its use ends: it leaves the pool
        with state.lock:
            state.open -= 1
            state.counts["detaches"] += 1

    def close_detached(_dbapi: object) -> None:
        with state.lock:
            state.counts["closes_detached"] += 1

    listeners: dict[str, Callable[..., None]] = {
        "checkin": checkin,
        "connect": connect,
        "close": close,
        "invalidate": invalidate,
        "soft_invalidate": soft_invalidate,
        "detach": detach,
        "close_detached": close_detached,
    }
    return {name: _guard(f"pool event {name}", fn) for name, fn in listeners.items()}


def _do_connect(
    state: EngineState, name: str | None
) -> Callable[[Dialect, ConnectionPoolEntry | None, object, dict[str, Any]], None]:
    """Starts the create-time clock; names the connection after its site unless the app did."""

    probe = _probe()

    def do_connect(
        dialect: Dialect, rec: ConnectionPoolEntry | None, _cargs: object, cparams: dict[str, Any]
    ) -> None:
        try:
            if rec is not None:
                state.connecting[rec] = (time.time(), time.perf_counter())
            if name is not None and not state.named:
                own = _own_name(dialect.driver, cparams)
                state.named = True
                probe.name_line(state, own or name, "app" if own else "probe")
            if name is not None and not _own_name(dialect.driver, cparams):
                _set_name(dialect.driver, cparams, name)
        except Exception as exc:
            log_once("do_connect", exc)
        return None

    return do_connect


def _own_name(driver: str, cparams: dict[str, Any]) -> str | None:
    """The application_name the app gives its connections, if any."""
    if driver == "asyncpg":
        settings: dict[str, str] = cparams.get("server_settings") or {}
        return settings.get("application_name")
    if cparams.get("application_name"):
        own: str = cparams["application_name"]
        return own
    for key in ("options", "dsn", "conninfo"):
        text = cparams.get(key)
        if isinstance(text, str) and "application_name" in text:
            return _conninfo_value(text)
    return os.environ.get("PGAPPNAME") or None


def _conninfo_value(text: str) -> str:
    for part in text.replace("-c ", " ").replace("?", " ").replace("&", " ").split():
        if part.startswith("application_name="):
            return part.split("=", 1)[1]
    return "(set in the connection string)"


def _set_name(driver: str, cparams: dict[str, Any], name: str) -> None:
    if driver == "asyncpg":
        cparams["server_settings"] = {
            **(cparams.get("server_settings") or {}),
            "application_name": name,
        }
    else:
        cparams["application_name"] = name


def _reattach(state: EngineState) -> Callable[[Engine], None]:
    def engine_disposed(engine: Engine) -> None:
        try:  # dispose() made a new pool: the probe's own mark on it
            engine.pool._poolbench_state = state  # type: ignore[attr-defined]
        except Exception as exc:
            log_once("engine_disposed", exc)

    return engine_disposed


def _wrap_connect(
    original: Callable[[Pool], PoolProxiedConnection], timeout_error: type[BaseException]
) -> Callable[[Pool], PoolProxiedConnection]:
    perf, probe = time.perf_counter, _probe()

    def connect(self: Pool) -> PoolProxiedConnection:
        state: EngineState | None = getattr(self, "_poolbench_state", None)
        if state is None:
            return original(self)
        t_wall, t0 = time.time(), perf()
        with state.lock:
            state.pending += 1
            if state.pending > state.pending_max:
                state.pending_max = state.pending
        try:
            fairy = original(self)
        except BaseException as exc:
            waited = perf() - t0
            kind = KIND_TIMEOUT if isinstance(exc, timeout_error) else KIND_ERROR
            with state.lock:
                state.pending -= 1
                state.counts["timeouts" if kind == KIND_TIMEOUT else "errors"] += 1
            probe.record(t_wall, waited, _NAN, state.id, kind)
            raise
        t1 = perf()
        rec = getattr(fairy, "_connection_record", None)
        with state.lock:
            state.pending -= 1
            state.counts["checkouts"] += 1
            if rec is not None and rec not in state.in_use:
                state.out += 1
                if state.out > state.out_max:
                    state.out_max = state.out
                kind = KIND_CHECKOUT
                if rec in state.opened:
                    state.opened.discard(rec)
                    kind |= OPENED
                state.in_use[rec] = (t_wall, t1 - t0, t1, kind)
        return fairy

    connect.__wrapped__ = original  # type: ignore[attr-defined]  # marks the wrapper as ours
    return connect


def _wrap_engine_created(original: Any) -> Any:
    """`Dialect.engine_created`, the hook create_engine() calls with every new engine, from
    its own frame (so the creation site is found above it). Not `Engine.__init__`:
    create_engine() reads that signature to route its keyword arguments (echo, logging_name,
    hide_parameters, …), and a wrapper's `*args, **kwargs` made it refuse them."""
    func = original.__func__

    def engine_created(cls: Any, engine: Engine) -> None:
        try:
            register_engine(engine, sys._getframe(1))
        except Exception as exc:
            log_once("engine registration", exc)
        func(cls, engine)

    engine_created.__wrapped__ = func  # type: ignore[attr-defined]  # marks the hook as ours
    return classmethod(engine_created)


def install_hooks() -> None:
    """Wrap Dialect.engine_created and every pool class's connect (SQLAlchemy is imported by
    now)."""
    from sqlalchemy import exc, pool
    from sqlalchemy.engine import interfaces

    classes = [getattr(pool, n) for n in dir(pool)]
    for cls in [c for c in classes if isinstance(c, type) and issubclass(c, pool.Pool)]:
        if "connect" in vars(cls) and not hasattr(vars(cls)["connect"], "__wrapped__"):
            cls.connect = _wrap_connect(vars(cls)["connect"], exc.TimeoutError)  # type: ignore[method-assign,assignment]  # the probe's hook
    created = vars(interfaces.Dialect)["engine_created"]
    if not hasattr(created.__func__, "__wrapped__"):
        interfaces.Dialect.engine_created = _wrap_engine_created(created)  # type: ignore[method-assign]  # the probe's hook


class _SqlalchemyHook:
    """A meta-path finder that installs the hooks once `sqlalchemy` has been imported."""

    def __init__(self) -> None:
        self.busy = False

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "sqlalchemy" or self.busy:
            return None
        import importlib.util

        self.busy = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        original = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            _remove_finder(self)
            try:
                install_hooks()
            except Exception as exc:
                log_once("installing its hooks", exc)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # the import hook
        return spec


def _remove_finder(finder: _SqlalchemyHook) -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(finder)


def start() -> None:
    """Called by sitecustomize: set up when POOLBENCH_PROBE_DIR names a directory."""
    global PROBE
    directory = os.environ.get(DIR_ENV)
    if not directory or PROBE is not None:
        return
    try:
        interval = float(os.environ.get(INTERVAL_ENV) or 0.1)
    except ValueError:
        interval = 0.1
    PROBE = probe = Probe(directory, max(0.01, interval))
    atexit.register(probe.close)
    _flush_before_raised_signals()
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork)
    if "sqlalchemy" in sys.modules:
        install_hooks()
    else:
        sys.meta_path.insert(0, _SqlalchemyHook())


def _flush_before_raised_signals() -> None:
    """uvicorn ends a worker by re-raising SIGTERM with the default handler once it has shut
    down (no atexit then): write the files out first, so the last 0.1 s is not lost."""
    import signal

    original = getattr(signal, "raise_signal", None)
    if original is None:
        return

    probe = _probe()

    def raise_signal(signum: int) -> None:
        try:
            if signal.getsignal(signum) == signal.SIG_DFL:
                probe.close()
            else:
                probe.flush()
        except Exception as exc:
            log_once("flushing before a signal", exc)
        original(signum)

    signal.raise_signal = raise_signal


def _after_fork() -> None:
    try:
        _probe().after_fork()
    except Exception as exc:
        log_once("after fork", exc)
