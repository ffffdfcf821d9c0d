"""A child's output written to a log file line by line, with secrets masked on the way.

A third-party app may print its settings, a connection URL or a traceback holding its
database password; app.log and setup.log live in the results folder that a team shares. So
the child writes into a pipe and a thread copies each line to the file through
`redact.mask_text` (registered secrets, URL passwords, `password=…`). Each line is flushed
as it arrives, so a crash leaves the log complete up to it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from poolbench.infra.process_group import spawn
from poolbench.redact import mask_text

JOIN_TIMEOUT_S = 5.0


def log_tail(
    path: Path, lines: int = 3, *, sep: str = " | ", prefer: str | None = None, chars: int = 400
) -> str:
    """The last non-empty lines of a log for an error message: masked, joined by `sep`, the
    end kept within `chars`; with `prefer`, only lines holding that word when any do (e.g.
    "error"). "" when the log is missing or empty."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    if prefer is not None:
        kept = [line for line in kept if prefer in line.lower()] or kept
    tail = mask_text(sep.join(kept[-lines:]))
    return tail if len(tail) <= chars else "…" + tail[-chars:]


class MaskedLog:
    """`fileno()` is the pipe's write end for Popen(stdout=…); `close()` after the child ends."""

    def __init__(self, path: Path, mode: str = "wb") -> None:
        self.path = Path(path)
        self._file = self.path.open(mode)
        self._read, self._write = os.pipe()  # not inherited, except as the child's stdout
        self._thread = threading.Thread(target=self._copy, name=f"log:{path.name}", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._write

    def write_line(self, text: str) -> None:
        """A line of the harness's own (e.g. the command about to run), masked too."""
        os.write(self._write, (text.rstrip("\n") + "\n").encode())

    def spawn(self, argv: list[str], *, what: str, **popen: Any) -> subprocess.Popen[bytes]:
        """`process_group.spawn` with the child's stdout and stderr into this log and no stdin;
        the log is closed if it cannot start (OSError, for the caller to word)."""
        try:
            proc = spawn(
                argv,
                what=what,
                stdin=subprocess.DEVNULL,
                stdout=self,
                stderr=subprocess.STDOUT,
                **popen,
            )
        except OSError:
            self.close()
            raise
        self.started()
        return proc

    def started(self) -> None:
        """Drop our copy of the write end once the child has it: EOF comes when it exits."""
        if self._write != -1:
            os.close(self._write)
            self._write = -1

    def _copy(self) -> None:
        """Copy until EOF. When the file stops taking lines (a full disk: the run's own writes
        fail and end it), the rest is read and dropped, so the child never blocks on the pipe."""
        writing = True
        with os.fdopen(self._read, "rb") as source:
            for line in source:
                if not writing:
                    continue
                try:
                    self._file.write(mask_text(line.decode(errors="replace")).encode())
                    self._file.flush()
                except ValueError:  # closed after a join that timed out: drop the rest
                    return
                except OSError:
                    writing = False

    def close(self) -> None:
        """Wait for the copy to reach EOF (every writer gone), then close the file (what a full
        disk kept from it is lost; the run's own writes report the disk)."""
        self.started()
        self._thread.join(JOIN_TIMEOUT_S)  # a stray grandchild holding the pipe: give up
        with contextlib.suppress(OSError):
            self._file.close()
