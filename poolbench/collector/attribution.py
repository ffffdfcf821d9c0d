"""Which local process is at the other end of a connection: socket-owner lookups.

Two questions are answered from the host's socket tables: which process owns the client
end of an untagged backend's connection (`UntaggedResolver`, for its label), and whether
the backend serving the collector is a local process owning the server end of the
collector's own socket (`PostmasterFinder`: then its parent, the postmaster, is visible).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from concurrent.futures import Executor
from typing import Any

import psutil
import psycopg

from poolbench.collector.procfs import alive

UNTAGGED = "untagged"


def _local_addresses() -> set[str]:
    addresses = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError, psutil.Error):
        for entries in psutil.net_if_addrs().values():
            for entry in entries:
                if entry.family in (socket.AF_INET, socket.AF_INET6):
                    addresses.add(entry.address.split("%", 1)[0])
    return addresses


class UntaggedResolver:
    """client address + port of an untagged backend -> label of the local process owning it."""

    MAX_ENTRIES = 4096
    MAX_ATTEMPTS = 3

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.pending: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._local: set[str] | None = None
        self._running = False
        self._last = 0.0

    def label(self, key: str) -> str:
        found = self.labels.get(key)
        if found is not None:
            return found
        self.pending.add(key)
        return UNTAGGED

    def due(self, now: float) -> bool:
        return bool(self.pending) and not self._running and now - self._last >= 1.0

    def resolve(self, keys: set[str]) -> dict[str, str]:
        """Runs in a worker thread: one scan of the host's sockets for every pending key."""
        if self._local is None:
            self._local = _local_addresses()
        found: dict[str, str] = {}
        wanted: dict[tuple[str, int], str] = {}
        for key in keys:
            address, _, port = key.rpartition(" ")
            if not address or port in ("", "-1"):
                found[key] = UNTAGGED  # a Unix-socket client: no address to look up
            elif address not in self._local:
                found[key] = f"{UNTAGGED}:{address}"
            else:
                wanted[(address, int(port))] = key
        if wanted:
            try:
                sockets = psutil.net_connections(kind="inet")
            except (psutil.Error, OSError):
                sockets = []
            for conn in sockets:
                if not conn.laddr or conn.pid is None:
                    continue
                key = wanted.get((conn.laddr.ip, conn.laddr.port))
                if key is None:
                    continue
                try:
                    name = psutil.Process(conn.pid).name()
                except psutil.Error:
                    continue
                found[key] = f"{UNTAGGED}:{name}:{conn.pid}"
        return found

    def apply(self, keys: set[str], found: dict[str, str]) -> None:
        if len(self.labels) > self.MAX_ENTRIES:
            self.labels.clear()
            self._attempts.clear()
        self.labels.update(found)
        for key in keys - found.keys():
            attempts = self._attempts.get(key, 0) + 1
            if attempts >= self.MAX_ATTEMPTS:
                self.labels[key] = UNTAGGED  # its owner is gone or not visible: stop looking
                self._attempts.pop(key, None)
            else:
                self._attempts[key] = attempts
        self.pending -= keys

    async def resolve_pending(self, executor: Executor | None) -> None:
        """Look every pending key up in one scan, in a worker thread (it costs ~30 ms of CPU)."""
        keys = set(self.pending)
        self._running = True
        try:
            found = await asyncio.get_running_loop().run_in_executor(executor, self.resolve, keys)
            self.apply(keys, found)
        except RuntimeError:  # the executor shut down at stop
            pass
        finally:
            self._running = False
            self._last = time.monotonic()


def socket_ends(conn: psycopg.AsyncConnection) -> tuple[Any, Any]:
    """(our address, the server's address) of the monitoring connection's socket."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            return sock.getsockname(), sock.getpeername()
    except (OSError, psycopg.Error):
        return None, None


class PostmasterFinder:
    """Proves the server's processes visible from this host, or says why they are not."""

    def __init__(self, given_pid: int | None) -> None:
        self._given = given_pid  # a hint from the configuration, checked
        self._given_pid_ok = False  # the given pid was verified once

    def find(self, backend_pid: int, sockname: Any, peername: Any) -> tuple[int | None, str]:
        """(postmaster pid, "") when the server's processes are provably visible, else a reason."""
        given = self._given
        parent: int | None = None
        owns_socket = False
        try:
            backend = psutil.Process(backend_pid)
            parent = backend.ppid()
            if sockname is not None and peername is not None:
                kind = "unix" if isinstance(peername, str) else "inet"
                for c in backend.net_connections(kind=kind):
                    if kind == "unix":
                        owns_socket = owns_socket or (c.laddr == peername and bool(peername))
                    elif c.laddr and c.raddr:
                        ends = ((c.laddr.ip, c.laddr.port), (c.raddr.ip, c.raddr.port))
                        owns_socket = owns_socket or ends == (peername[:2], sockname[:2])
        except (psutil.Error, OSError):
            parent = None
        if given is not None and not (self._given_pid_ok and not alive(given)):
            if alive(given) and parent == given:
                self._given_pid_ok = True
                return given, ""
            return None, (
                f"postmaster pid {given} is not the parent of the backend serving the "
                f"collector (pid {backend_pid}) on this host"
            )
        if owns_socket and parent is not None and alive(parent):
            return parent, ""
        return None, (
            f"the backend serving the collector (pid {backend_pid}) is not a local process "
            "owning the collector's connection (server on another host, in a container, or "
            "behind a proxy)"
        )
