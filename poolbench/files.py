"""Writing files whole, or not at all, and saying which file when the disk refuses.

Every file poolbench writes in one go (run.json, variant.json, summary.json, the report, a
chart, the requests' endpoint table, a masked server log) goes through `atomic_write` or
`atomic_file`: the content goes to a hidden temporary file beside the target, which is
renamed over it only once complete, so a file that exists is whole. When writing fails (a
full disk, a folder made read-only) the temporary file is removed and the failure is a
`WriteFailed`: one line naming the path, never a traceback. `inside` checks that a path
built from a user's name stays under the folder it is meant for.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from poolbench.errors import PoolbenchError


class WriteFailed(PoolbenchError):
    """A file could not be written (disk full, read-only folder, …): its path and why."""

    exit_code = 1
    ends_run = True  # the next variant would write to the same full or read-only disk


def write_failed(path: Path | str, exc: OSError) -> WriteFailed:
    """The one-line error for an OSError met while writing `path`."""
    why = exc.strerror or type(exc).__name__
    return WriteFailed(f"cannot write {path}: {why}")


def temporary_name(path: Path) -> Path:
    """Where `path` is written before it is renamed into place (hidden, same folder)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside `path`; when the block ends well, rename it to `path`.

    On any error the temporary file is removed; an OSError becomes a WriteFailed naming
    `path`. Text mode writes UTF-8 unless told otherwise.
    """
    path = Path(path)
    tmp = temporary_name(path)
    if "b" not in mode:
        open_args.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **open_args) as handle:
            yield handle
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise write_failed(path, exc) from None
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: Path | str, content: str | bytes) -> Path:
    """Write `content` to `path` whole (temporary file + rename); a failure is WriteFailed."""
    with atomic_file(path, "wb" if isinstance(content, bytes) else "w") as handle:
        handle.write(content)
    return Path(path)


def rewrite_in_place(path: Path | str, content: str) -> bool:
    """Overwrite an existing file in place, for when `atomic_write` failed (a full disk, a
    folder that no longer takes new files): truncating frees the space the old content held,
    so content no longer than it fits. Returns whether it worked; never raises."""
    try:
        with open(path, "r+", encoding="utf-8") as handle:
            handle.truncate(0)
            handle.write(content)
    except OSError:
        return False
    return True


def inside(root: Path, path: Path) -> bool:
    """Whether `path` (resolved: `..`, symlinks) lies strictly under `root`."""
    return root.resolve() in path.resolve().parents


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
