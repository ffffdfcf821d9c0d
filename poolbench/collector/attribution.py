"""Which local process is at the other end of a connection: socket-owner lookups.

Two questions are answered from the host's socket tables: which process owns the client
end of an untagged backend's connection (`BackendOwners`, for its label), and whether
the backend serving the collector is a local process owning the server end of the
collector's own socket (`PostmasterFinder`: then its parent, the postmaster, is visible).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import psutil

from poolbench.collector.procfs import HAS_PROC, alive
from poolbench.collector.sockets import End, SocketTable, holders, holders_psutil
from poolbench.results.names import UNTAGGED

if TYPE_CHECKING:  # the report imports this module; only the collector needs the driver
    import psycopg

MAX_OWNERS = 64  # processes that owned client sockets lately: looked at first

Backend = tuple[int, str]  # (backend pid, client "address port")


def _local_addresses() -> set[str]:
    addresses = {"127.0.0.1", "::1"}
    with contextlib.suppress(OSError, psutil.Error):
        for entries in psutil.net_if_addrs().values():
            for entry in entries:
                if entry.family in (socket.AF_INET, socket.AF_INET6):
                    addresses.add(entry.address.split("%", 1)[0])
    return addresses


class BackendOwners:
    """Backend pid -> the label of its client process, looked up once, kept for its life.

    An untagged backend (empty application_name) is labelled ``untagged:<process>:<pid>``
    after the local process owning the client end of its socket, ``untagged:<address>``
    for a client on another host, ``untagged`` when no owner can be found (a Unix-socket
    client, a process this host may not look into, a client already gone). The label is
    fixed when the backend is first met and dropped when the backend ends (`retire`), so a
    backend is never counted under two names. `lookup` runs in the connection thread.
    """

    def __init__(self) -> None:
        self._labels: dict[int, tuple[str, str]] = {}  # backend pid -> (client, label)
        self._owners: dict[int, None] = {}  # recent owner pids, most recent last
        self._local: set[str] | None = None
        self._sockets = SocketTable()
        self.server: End | None = None  # the server's end of the collector's own connection

    def close(self) -> None:
        self._sockets.close()

    def label(self, pid: int, client: str) -> str | None:
        """The backend's label; None when it was never looked up (or its pid was reused)."""
        known = self._labels.get(pid)
        return known[1] if known is not None and known[0] == client else None

    def unknown(self, backends: Iterable[Backend]) -> list[Backend]:
        return [(pid, client) for pid, client in backends if self.label(pid, client) is None]

    def retire(self, present: set[int]) -> None:
        """Forget the backends that ended (those not in `present`)."""
        for pid in [p for p in self._labels if p not in present]:
            del self._labels[pid]

    def lookup(self, backends: list[Backend]) -> dict[int, str]:
        """Label and remember each backend (connection thread; one pass over the socket tables)."""
        if self._local is None:
            self._local = _local_addresses()
        found: dict[int, str] = {}
        wanted: dict[tuple[str, int], list[int]] = {}
        for pid, client in backends:
            address, _, port = client.rpartition(" ")
            if not address or port in ("", "-1"):
                found[pid] = UNTAGGED  # a Unix-socket client: no address to look up
            elif address not in self._local:
                found[pid] = f"{UNTAGGED}:{address}"
            else:
                wanted.setdefault((address, int(port)), []).append(pid)
        for end, owner in self._owners_of(set(wanted)).items():
            self._remember(owner)
            for pid in wanted.pop(end):
                found[pid] = owner[1]
        for pids in wanted.values():  # not found: gone, or not ours to see
            for pid in pids:
                found[pid] = UNTAGGED
        clients = dict(backends)
        for pid, label in found.items():
            self._labels[pid] = (clients[pid], label)
        return found

    def _remember(self, owner: tuple[int, str]) -> None:
        self._owners.pop(owner[0], None)
        self._owners[owner[0]] = None
        while len(self._owners) > MAX_OWNERS:
            del self._owners[next(iter(self._owners))]

    def _owners_of(self, ends: set[End]) -> dict[End, tuple[int, str]]:
        """(address, port) of a local socket -> (pid, label) of the process holding it."""
        if not ends:
            return {}
        if HAS_PROC:
            inodes = self._sockets.inodes(ends, [self.server] if self.server else [])
            found = holders(inodes, self._candidates()) if inodes else {}
        else:
            found = holders_psutil(ends)
        out: dict[End, tuple[int, str]] = {}
        for end, pid in found.items():
            with contextlib.suppress(psutil.Error):
                out[end] = (pid, f"{UNTAGGED}:{psutil.Process(pid).name()}:{pid}")
        return out

    def _candidates(self) -> Iterable[int]:
        """Recent owners first (a worker opening one more connection), then every process,
        newest first (apps under test are usually recent)."""
        recent = list(reversed(self._owners))
        yield from recent
        try:
            others = [int(d) for d in os.listdir("/proc") if d.isdigit()]
        except OSError:
            return
        done = set(recent)
        yield from sorted((p for p in others if p not in done), reverse=True)


def socket_ends(conn: psycopg.Connection) -> tuple[Any, Any]:
    """(our address, the server's address) of the monitoring connection's socket."""
    import psycopg

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
