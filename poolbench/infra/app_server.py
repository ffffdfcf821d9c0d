"""Start and stop an app variant: one uvicorn process tree, owned from start to kill.

A variant is started in its own session (`start_new_session=True`), so the master and
every worker share one process group that `stop()` can signal at once: SIGTERM, a grace
period, then SIGKILL, and finally any descendant psutil still finds (a worker that
changed its group) is killed one by one. The app listens on 127.0.0.1 only, at a port
the harness picks (or is given), and its stdout and stderr go to a log file the caller
names. `start()` returns only when `health_path` answers 200; otherwise it raises
`VariantStartError` — a first line that names the problem and the log, then the log's
last lines, quoted — and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from poolbench.config.placeholders import expand
from poolbench.errors import PoolbenchError
from poolbench.infra.masked_log import MaskedLog, log_tail
from poolbench.infra.postgres import free_port
from poolbench.infra.process_group import alive, stop_group
from poolbench.probe import probe_env

HOST = "127.0.0.1"
LOG_TAIL_LINES = 5  # the error's first line says it all; these lines show the cause


class VariantStartError(PoolbenchError):
    """The app did not come up: first line names the problem and the log, then its tail."""


@dataclass(frozen=True)
class VariantSpec:
    """What to start: an app directory run by uvicorn, or a command of your own.

    In `command` and the values of `env`, `{port}`, `{host}`, `{workers}`, the names in
    `values` (e.g. `{database_url}`) and `${VAR}` from the environment are replaced
    (poolbench/config/placeholders.py). `cwd` is the command's directory (an app_dir's is itself).
    """

    name: str
    app_dir: Path | None = None
    command: list[str] | None = None
    health_path: str = "/ping"
    env: Mapping[str, str] = field(default_factory=dict)
    workers: int = 1
    label: str | None = None  # APP_VARIANT, the application_name prefix; default: name
    cwd: Path | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    probe_dir: Path | None = None  # the pool probe writes here; None: no probe, env untouched

    def placeholder_values(self, port: int) -> dict[str, str]:
        return {**self.values, "port": str(port), "host": HOST, "workers": str(self.workers)}

    def argv(self, port: int) -> list[str]:
        if self.command:
            values = self.placeholder_values(port)
            return [expand(arg, values) for arg in self.command]
        if self.app_dir is None:
            raise VariantStartError(f"variant {self.name!r} needs an app_dir or a command")
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(self.workers),
        ]


@dataclass(frozen=True)
class PoolSettings:
    """The app's pool configuration, passed as DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_TIMEOUT."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0

    def env(self) -> dict[str, str]:
        return {
            "DB_POOL_SIZE": str(self.pool_size),
            "DB_MAX_OVERFLOW": str(self.max_overflow),
            "DB_POOL_TIMEOUT": f"{self.pool_timeout:g}",
        }


class RunningVariant:
    """One started variant. Use `start_variant(...)` as a context manager, or start()/stop()."""

    def __init__(
        self,
        spec: VariantSpec,
        *,
        database_url: str,
        log_path: Path,
        pools: PoolSettings = PoolSettings(),
        port: int | None = None,
        health_timeout: float = 30.0,
    ) -> None:
        self.spec = spec
        self.database_url = database_url
        self.log_path = Path(log_path)
        self.pools = pools
        self.port = port
        self.health_timeout = health_timeout
        self.startup_seconds: float | None = None  # Popen to first healthy answer
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._log: MaskedLog | None = None

    # ------------------------------------------------------------------ properties

    @property
    def pid(self) -> int:
        """The master's pid (kept after stop(), for the record)."""
        if self._pid is None:
            raise RuntimeError(f"variant {self.spec.name!r} was never started")
        return self._pid

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def label(self) -> str:
        return self.spec.label or self.spec.name

    def pids(self) -> list[int]:
        """The master and all its live descendants (uvicorn workers), master first."""
        proc = self._proc  # read once: a collector thread may call this while stop() runs
        if proc is None:
            return []
        try:
            master = psutil.Process(proc.pid)
            tree = [master, *master.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        return [p.pid for p in tree if alive(p)]

    # ------------------------------------------------------------------ start

    def env(self) -> dict[str, str]:
        values = self.spec.placeholder_values(self.port or 0)
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.database_url,
            "APP_VARIANT": self.label,
            **self.pools.env(),
            **{key: expand(value, values) for key, value in self.spec.env.items()},
        }

    def app_env(self) -> dict[str, str]:
        """The app's own environment: env(), plus what loads the pool probe when it is on
        (setup commands get env() alone, so a migration's engines are not probed)."""
        env = self.env()
        if self.spec.probe_dir is not None:
            env.update(probe_env(env, self.spec.probe_dir))
        return env

    def start(self) -> RunningVariant:
        if self._proc is not None:
            raise RuntimeError(f"variant {self.spec.name!r} is already started")
        if self.port is None:
            self.port = free_port(HOST)
        elif port_in_use(self.port):
            raise VariantStartError(
                f"cannot start variant {self.spec.name!r}: port {self.port} on {HOST} "
                "is already in use (stop what holds it, or let poolbench choose a free port)"
            )
        argv = self.spec.argv(self.port)
        cwd = self.spec.app_dir or self.spec.cwd
        if cwd is not None and not Path(cwd).is_dir():
            what = "app directory" if self.spec.app_dir else "working directory (cwd)"
            raise VariantStartError(f"{what} {cwd} of variant {self.spec.name!r} not found")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = MaskedLog(self.log_path)
        started = time.monotonic()
        try:
            self._proc = self._log.spawn(
                argv, what=f"app {self.spec.name}", cwd=cwd, env=self.app_env()
            )
            self._pid = self._proc.pid
        except OSError as exc:
            self._log = None  # closed by spawn
            raise VariantStartError(
                f"cannot start variant {self.spec.name!r}: {argv[0]}: {exc.strerror or exc}"
            ) from None
        try:
            self._wait_healthy()
        except BaseException:  # also Ctrl-C while waiting: leave nothing behind
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        url = self.base_url + self.spec.health_path
        deadline = time.monotonic() + self.health_timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self.stop()  # its workers too, and the log drained before it is read
                    if "address already in use" in log_tail(self.log_path, LOG_TAIL_LINES).lower():
                        raise self._start_error(
                            f"could not listen on {HOST}:{self.port}: address already in use"
                        )
                    raise self._start_error(f"exited with code {code} before {url} answered")
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise self._start_error(
                        f"did not answer {url} with 200 within {self.health_timeout:g} s"
                    )
                time.sleep(0.1)

    def _start_error(self, problem: str) -> VariantStartError:
        self.stop()  # stop first, so the log holds everything the app wrote
        tail = log_tail(self.log_path, LOG_TAIL_LINES, sep="\n", chars=2000)
        message = f"variant {self.spec.name!r} {problem} (log: {self.log_path})"
        quoted = "".join(f"\n  | {line}" for line in tail.splitlines())
        return VariantStartError(message + quoted)

    # ------------------------------------------------------------------ stop

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the process group, wait `timeout`, then SIGKILL; kill stragglers."""
        if self._proc is None:
            return
        stop_group(self._proc, timeout)
        self._close_log()
        self._proc = None

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> RunningVariant:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def start_variant(
    spec: VariantSpec,
    *,
    database_url: str,
    log_path: Path,
    pools: PoolSettings | None = None,
    port: int | None = None,
    health_timeout: float = 30.0,
) -> Iterator[RunningVariant]:
    """Start `spec`, wait until healthy, yield it, and stop its whole process tree."""
    variant = RunningVariant(
        spec,
        database_url=database_url,
        log_path=log_path,
        pools=pools or PoolSettings(),
        port=port,
        health_timeout=health_timeout,
    )
    variant.start()
    try:
        yield variant
    finally:
        variant.stop()


def port_in_use(port: int) -> bool:
    """Would a server (SO_REUSEADDR, as uvicorn binds) fail to listen on HOST:port?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
            sock.listen()
        except OSError:
            return True
    return False
