"""The host's TCP sockets: which socket is bound to an address and port, which process holds it.

A socket's inode is found by asking the kernel for that one socket (netlink ``sock_diag``,
the interface ``ss`` uses: a hash lookup, ~20 µs), falling back to a read of
``/proc/net/tcp{,6}`` (every socket of the host: milliseconds on a busy machine). Its
holder is found by reading the ``/proc/<pid>/fd`` links of candidate processes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import struct
import sys
from collections.abc import Iterable

import psutil

End = tuple[str, int]  # (address, port)

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NO_COOKIE = 0xFFFFFFFF
_TCP_LISTEN = 10
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_REQUEST = struct.Struct("=BBBxI")  # inet_diag_req_v2 up to its socket id
_SOCKET_ID = struct.Struct("!HH16s16s")  # ports and addresses, network order
_TAIL = struct.Struct("=III")  # interface, cookie[2]
_INODE_OFFSET = _HEADER.size + 4 + 48 + 16  # inet_diag_msg: 4 bytes, id, 4 u32, inode


class SocketTable:
    """Inodes of local TCP sockets by their local end; one netlink socket, reused."""

    def __init__(self) -> None:
        self._diag: socket.socket | None = None
        self._diag_ok = hasattr(socket, "AF_NETLINK")
        self._seq = 0

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()
            self._diag = None

    def inodes(self, ends: set[End], servers: Iterable[End]) -> dict[End, int]:
        """The inode of the socket whose local end is each of `ends` and whose other end is
        one of `servers` (or the end's own address on a server port). Ends with no socket
        (a client already gone) are left out."""
        servers = list(dict.fromkeys(servers))
        if not servers or not self._diag_ok:
            return _inodes_from_proc(ends)
        out: dict[End, int] = {}
        ports = list(dict.fromkeys(port for _, port in servers))
        for end in ends:
            remotes = [*servers, *((end[0], port) for port in ports)]
            for remote in dict.fromkeys(remotes):
                inode = self._diag_one(end, remote)
                if inode is None and not self._diag_ok:
                    return _inodes_from_proc(ends)  # netlink refused: the slow way
                if inode:
                    out[end] = inode
                    break
        return out

    def _diag_one(self, local: End, remote: End) -> int | None:
        """The inode of the TCP socket local -> remote; 0 when there is none, None when
        netlink cannot be used here."""
        family, src = _packed(local[0])
        remote_family, dst = _packed(remote[0])
        if family != remote_family:
            return 0
        try:
            if self._diag is None:
                self._diag = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
                self._diag.settimeout(1.0)
            self._seq += 1
            body = (
                _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF)
                + _SOCKET_ID.pack(local[1], remote[1], src.ljust(16, b"\0"), dst.ljust(16, b"\0"))
                + _TAIL.pack(0, _NO_COOKIE, _NO_COOKIE)
            )
            header = _HEADER.pack(
                _HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, self._seq, 0
            )
            self._diag.send(header + body)
            reply = self._diag.recv(65536)
        except OSError:
            self._diag_ok = False
            self.close()
            return None
        if len(reply) < _INODE_OFFSET + 4:
            return 0
        kind = _HEADER.unpack_from(reply)[1]
        if kind == _NLMSG_ERROR or reply[_HEADER.size + 1] == _TCP_LISTEN:
            return 0  # ENOENT: no such socket (a listener is not a client's socket)
        return int(struct.unpack_from("=I", reply, _INODE_OFFSET)[0])


def _packed(address: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(address)
    return (socket.AF_INET if ip.version == 4 else socket.AF_INET6), ip.packed


def _hex_address(address: str, family_size: int) -> str:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host byte order."""
    raw = ipaddress.ip_address(address).packed
    if family_size == 16 and len(raw) == 4:
        raw = b"\0" * 10 + b"\xff\xff" + raw  # an IPv4 client on a dual-stack socket
    if len(raw) != family_size:
        return ""
    words = (raw[i : i + 4] for i in range(0, len(raw), 4))
    return "".join(f"{int.from_bytes(w, sys.byteorder):08X}" for w in words)


def _inodes_from_proc(ends: set[End]) -> dict[End, int]:
    """The slow way: every TCP socket of the host, from /proc/net/tcp and tcp6."""
    out: dict[End, int] = {}
    for table, size in (("tcp", 4), ("tcp6", 16)):
        keys = {}
        for address, port in ends:
            hexed = _hex_address(address, size)
            if hexed and (address, port) not in out:
                keys[f"{hexed}:{port:04X}".encode()] = (address, port)
        if not keys:
            continue
        try:
            with open(f"/proc/net/{table}", "rb") as f:
                data = f.read()
        except OSError:
            continue
        local = b"|".join(re.escape(k) for k in keys)
        pattern = re.compile(rb"^\s*\d+: (" + local + rb") (?:\S+\s+){7}(\d+)", re.MULTILINE)
        for key, inode in pattern.findall(data):
            if inode != b"0":  # 0: no socket behind it any more (TIME_WAIT)
                out[keys[key]] = int(inode)
    return out


def holders(inodes: dict[End, int], candidates: Iterable[int]) -> dict[End, int]:
    """Which process holds each socket: the first of `candidates` with an fd on it."""
    wanted = {f"socket:[{inode}]": end for end, inode in inodes.items()}
    out: dict[End, int] = {}
    for pid in candidates:
        if not wanted:
            break
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                end = wanted.pop(os.readlink(f"{fd_dir}/{fd}"), None)
                if end is not None:
                    out[end] = pid
    return out


def holders_psutil(ends: set[End]) -> dict[End, int]:
    """Off Linux: one scan of the host's sockets through psutil."""
    out: dict[End, int] = {}
    try:
        sockets = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return out
    for conn in sockets:
        if conn.laddr and conn.pid is not None and (conn.laddr.ip, conn.laddr.port) in ends:
            out[(conn.laddr.ip, conn.laddr.port)] = conn.pid
    return out


def listening(pids: Iterable[int]) -> list[End]:
    """The TCP ends (address, port) these processes listen on; a process gone is skipped."""
    ends: set[End] = set()
    for pid in pids:
        with contextlib.suppress(psutil.Error, OSError):
            for conn in psutil.Process(pid).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    ends.add((conn.laddr.ip, conn.laddr.port))
    return sorted(ends)


def beyond_loopback(ends: Iterable[End]) -> list[End]:
    """The ends reachable from other machines: any address but a loopback one."""
    out = []
    for address, port in ends:
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        loopback = ip is not None and ip.is_loopback
        if not loopback:
            out.append((address, port))
    return out
