"""Entry points: `CollectorThread` for synchronous callers, `run` inside an event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from poolbench.collector.core import Collector
from poolbench.collector.latest import Latest
from poolbench.collector.settings import CollectorConfig
from poolbench.errors import PoolbenchError


async def run(config: CollectorConfig, stop: asyncio.Event) -> Latest:
    """Sample until `stop` is set, without blocking the event loop (the collector's own
    threads sample). Start-up problems raise PoolbenchError before any sampling."""
    collector = Collector(config)
    await asyncio.to_thread(collector.start)
    halt = threading.Event()
    sampling = asyncio.ensure_future(asyncio.to_thread(collector.run, halt))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([sampling, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        halt.set()
        stopping.cancel()
    return await sampling


class CollectorThread:
    """The collector in background threads, for synchronous callers.

    ``start()`` connects and checks the server in the caller's thread (raising its
    PoolbenchError), then samples in the background; ``stop()`` ends it, closes the samples
    file, and returns the last `Latest`. Usable as a context manager.
    """

    def __init__(self, config: CollectorConfig) -> None:
        self.collector = Collector(config)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def latest(self) -> Latest:
        return self.collector.latest()

    @property
    def rows_written(self) -> int:
        """Rows the samples file holds (final once stop() returned): a check for readers."""
        return self.collector.rows_written

    def set_load_pid(self, pid: int | None) -> None:
        self.collector.set_load_pid(pid)

    def start(self) -> CollectorThread:
        if self._thread is not None:
            raise RuntimeError("collector already started")
        self.collector.start()
        self._thread = threading.Thread(target=self._main, name="poolbench-collector", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> Latest:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise PoolbenchError(f"the collector did not stop within {timeout:.0f} s")
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self.latest()

    def __enter__(self) -> CollectorThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Stop. An error that ended the collector surfaces here, unless the block is already
        raising one: that is what went wrong first, and the one kept."""
        if exc_type is None:
            self.stop()
        else:
            with contextlib.suppress(Exception):
                self.stop()

    def _main(self) -> None:
        try:
            self.collector.run(self._stop)
        except BaseException as exc:
            self._error = exc
