"""`poolbench watch`: the collector alone, against any PostgreSQL and any app, with a live view.

    poolbench watch --database-url postgresql://postgres@127.0.0.1/app --pid 4242 --duration 60

Samples connections (by application_name × state), churn, memory and CPU exactly as a run
does, writes them to ``DIR/samples.csv`` (default ``results/watch-<timestamp>/``), and shows
a table refreshed in place. Ctrl-C (or SIGTERM, or the end of ``--duration``) stops it
cleanly: the file is flushed, closed and renamed into place, and the exit code is 0. The
database to watch is the one named in the URL; the URL's role must be a superuser or a
member of pg_monitor.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.text import Text

from poolbench.collector import (
    MAX_CONNECTIONS_HZ,
    CollectorConfig,
    CollectorThread,
    Latest,
)
from poolbench.errors import PoolbenchError
from poolbench.format import MiB
from poolbench.infra.postgres import validate_url
from poolbench.redact import mask_url

STATE_COLUMNS = (("active", "active"), ("idle", "idle"), ("idle in transaction", "idle in tx"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env_url = os.environ.get("DATABASE_URL")
    parser.add_argument(
        "--database-url",
        default=env_url,
        required=env_url is None,
        metavar="URL",
        help="the PostgreSQL to watch, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB; the role "
        "must be a superuser or a member of pg_monitor (default: $DATABASE_URL)",
    )
    parser.add_argument(
        "--pid",
        type=int,
        action="append",
        default=[],
        metavar="PID",
        help="an app process to measure (with its children); repeat for several",
    )
    parser.add_argument("--load-pid", type=int, metavar="PID", help="a load generator's pid (CPU)")
    parser.add_argument(
        "--postmaster-pid",
        type=int,
        metavar="PID",
        help="the server's main pid, when it cannot be found from the connection",
    )
    parser.add_argument(
        "--pools-url", metavar="URL", help="the app's /debug/pools endpoint, sampled at 1 Hz"
    )
    parser.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where samples.csv goes (default: results/watch-<timestamp>/)",
    )
    parser.add_argument(
        "--hz",
        type=float,
        default=10.0,
        metavar="N",
        help=f"connection samples per second (default 10, at most {MAX_CONNECTIONS_HZ:.0f})",
    )
    parser.add_argument(
        "--memory-hz",
        type=float,
        default=CollectorConfig.memory_hz,
        metavar="N",
        help=f"memory and CPU samples per second (default {CollectorConfig.memory_hz:g})",
    )


def _config(args: argparse.Namespace) -> CollectorConfig:
    url = validate_url(args.database_url)
    if args.duration is not None and args.duration <= 0:
        raise PoolbenchError(f"--duration must be positive, not {args.duration}")
    out = args.out or Path("results") / f"watch-{time.strftime('%Y%m%d-%H%M%S')}"
    return CollectorConfig(
        admin_url=url,
        out_path=Path(out) / "samples.csv",
        connections_hz=args.hz,
        memory_hz=args.memory_hz,
        app_pids=list(args.pid),
        load_pid=args.load_pid,
        postmaster_pid=args.postmaster_pid,
        pools_url=args.pools_url,
    )


def run(args: argparse.Namespace) -> int:
    """Watch until --duration elapses or Ctrl-C; PoolbenchError for anything the user can fix."""
    config = _config(args)
    console = Console()
    stop = threading.Event()
    previous_term = _on_sigterm(stop)
    handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False)
    logger = logging.getLogger("poolbench.collector")
    logger.addHandler(handler)
    collector = CollectorThread(config)
    started = time.monotonic()
    try:
        try:
            collector.start()
            view = _View(config, started)
            with Live(
                get_renderable=lambda: view.render(collector.latest()),
                console=console,
                refresh_per_second=2,
            ):
                deadline = None if args.duration is None else started + args.duration
                while not stop.is_set():
                    left = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
                    if left <= 0:
                        break
                    stop.wait(left)
        except KeyboardInterrupt:
            pass
        finally:
            latest = collector.stop()
    finally:
        logger.removeHandler(handler)
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
    elapsed = time.monotonic() - started
    console.print(
        f"watched {elapsed:.1f} s: {latest.samples} connection samples, "
        f"peak {_n(latest.peak)} connections; samples: {config.out_path}",
        highlight=False,
        soft_wrap=True,
    )
    return 0


def _on_sigterm(stop: threading.Event) -> Any:
    """SIGTERM ends the watch like Ctrl-C; returns the handler to restore (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())


# --------------------------------------------------------------------------- the view


def _n(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.0f}"


def _mib(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value / MiB:.1f} MiB"


def _mib_cell(latest: Latest, metric: str, name: str) -> str:
    """A backend memory cell: blank before the first sweep or once the name has gone."""
    key = (metric, "postgres_backends", name)
    if name not in latest.by_name or key not in latest.memory:
        return ""
    return _mib(latest.memory[key])


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} %"


class _View:
    """The live view as preformatted text: rich's Table costs ~15 ms a frame, this ~0.5 ms."""

    def __init__(self, config: CollectorConfig, started: float) -> None:
        self.config = config
        self.started = started
        self.title = f"poolbench watch · {mask_url(config.admin_url)}"

    def render(self, latest: Latest) -> Text:
        out = Text()
        elapsed = time.monotonic() - self.started
        out.append(self.title, style="bold")
        out.append(
            f" · {elapsed:.0f} s · {self.config.connections_hz:g} Hz · {latest.samples} samples"
        )
        if not latest.connected:
            out.append("  reconnecting…", style="bold red")
        out.append(
            f"\nconnections {_n(latest.total)} (peak {_n(latest.peak)}) · "
            f"max_connections {_n(latest.max_connections)} · "
            f"slots left for non-superusers {_n(latest.slots_left)}"
        )
        if latest.gaps:
            out.append(f" · gaps {latest.gaps} ({latest.gap_seconds:.1f} s)", style="yellow")
        out.append("\n\n")
        self._table(out, latest)
        for line in self._lines(latest):
            out.append("\n" + line)
        return out

    def _table(self, out: Text, latest: Latest) -> None:
        names = sorted(set(latest.by_name) | set(latest.peak_by_name))
        width = min(48, max([16, *(len(n) for n in names)]))
        states = [label for _, label in STATE_COLUMNS]
        header = f"{'application_name':<{width}} {'now':>5} {'peak':>5} " + " ".join(
            f"{label:>{max(6, len(label))}}" for label in [*states, "other"]
        )
        out.append(header + f" {'backends PSS':>13} {'USS':>10}", style="bold")
        known = {state for state, _ in STATE_COLUMNS}
        for name in names:
            shown = name if len(name) <= width else name[: width - 1] + "…"
            counts = [latest.by_name_state.get((name, s), 0) for s, _ in STATE_COLUMNS]
            counts.append(
                sum(
                    n
                    for (nm, s), n in latest.by_name_state.items()
                    if nm == name and s not in known
                )
            )
            cells = " ".join(
                f"{n:>{max(6, len(label))}}"
                for n, label in zip(counts, [*states, "other"], strict=True)
            )
            pss = _mib_cell(latest, "mem_pss_bytes", name)
            uss = _mib_cell(latest, "mem_uss_bytes", name)
            out.append(
                f"\n{shown or '(empty)':<{width}} {latest.by_name.get(name, 0):>5} "
                f"{latest.peak_by_name.get(name, 0):>5} {cells} {pss:>13} {uss:>10}"
            )
        if not names:
            out.append("\n(no client connections)", style="dim")
        out.append("\n")

    def _lines(self, latest: Latest) -> list[str]:
        lines = []
        churn = latest.churn
        if churn:
            rates = [
                "–" if churn.get(m) is None else f"{churn[m]:.0f}"
                for m in (
                    "sessions_new",
                    "sessions_abandoned",
                    "sessions_fatal",
                    "xact_commit",
                    "xact_rollback",
                )
            ]
            lines.append(
                "churn /s   new sessions {} · abandoned {} · fatal {} · commits {} · "
                "rollbacks {}".format(*rates)
            )
        mem = latest.memory
        if latest.postgres_visible is False:
            lines.append("memory     postgres: processes not visible from this host (n/a)")
        elif ("mem_pss_bytes", "postgres", "") in mem:
            pss = mem.get(("mem_pss_bytes", "postgres", ""))
            rss = mem.get(("mem_rss_bytes", "postgres", ""))
            ratio = f" = {rss / pss:.1f}× PSS" if pss and rss else ""
            every = latest.memory_interval
            lines.append(
                f"memory     postgres ({_n(latest.processes.get(('postgres', '')))} processes) "
                f"PSS {_mib(pss)} · USS {_mib(mem.get(('mem_uss_bytes', 'postgres', '')))} · "
                f"summed RSS {_mib(rss)}{ratio}"
                + (f" · re-read late: {every:.1f} s" if every and every > 2.05 else "")
            )
        if ("mem_pss_bytes", "app", "") in mem:
            lines.append(
                f"           app ({_n(latest.processes.get(('app', '')))} processes) "
                f"USS {_mib(mem.get(('mem_uss_bytes', 'app', '')))} · "
                f"PSS {_mib(mem.get(('mem_pss_bytes', 'app', '')))} · "
                f"RSS {_mib(mem.get(('mem_rss_bytes', 'app', '')))}"
            )
        if latest.cpu:
            parts = [
                f"{c} {_pct(latest.cpu.get(c))}"
                for c in ("app", "postgres", "load", "collector")
                if c in latest.cpu
            ]
            lines.append("cpu        " + " · ".join(parts) + " (of one core)")
        for pool in latest.pools:
            lines.append(
                f"pool       {pool.get('name')}: size {_n(pool.get('size'))} · "
                f"checked out {_n(pool.get('checked_out'))} · in {_n(pool.get('checked_in'))} · "
                f"overflow {_n(pool.get('overflow'))}"
            )
        return lines
