"""Entry points: `run` inside an event loop, `CollectorThread` for synchronous callers."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from poolbench.collector.config import CollectorConfig
from poolbench.collector.core import Collector
from poolbench.collector.latest import Latest
from poolbench.errors import PoolbenchError


async def run(config: CollectorConfig, stop: asyncio.Event) -> Latest:
    """Sample until `stop` is set. Start-up problems raise PoolbenchError before any sampling."""
    return await Collector(config).run(stop)


class CollectorThread:
    """The collector on its own event loop in a background thread, for synchronous callers.

    ``start()`` returns once the collector is connected and sampling (or raises its
    PoolbenchError); ``stop()`` ends it, closes the samples file, and returns the last
    `Latest`. Usable as a context manager.
    """

    def __init__(self, config: CollectorConfig) -> None:
        self.collector = Collector(config)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._started = False

    def latest(self) -> Latest:
        return self.collector.latest()

    @property
    def rows_written(self) -> int:
        """Rows the samples file holds (final once stop() returned): a check for readers."""
        return self.collector.rows_written

    def set_load_pid(self, pid: int | None) -> None:
        self.collector.set_load_pid(pid)

    def start(self, timeout: float = 60.0) -> CollectorThread:
        if self._thread is not None:
            raise RuntimeError("collector already started")
        self._thread = threading.Thread(target=self._main, name="poolbench-collector", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise PoolbenchError(f"the collector did not start within {timeout:.0f} s")
        if self._error is not None:
            self._thread.join()
            error, self._error = self._error, None
            raise error
        self._started = True
        return self

    def stop(self, timeout: float = 30.0) -> Latest:
        self._stopping.set()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(event.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise PoolbenchError(f"the collector did not stop within {timeout:.0f} s")
        if self._error is not None and self._started:
            error, self._error = self._error, None
            raise error
        return self.latest()

    def __enter__(self) -> CollectorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._amain())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _amain(self) -> None:
        self._stop_event = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            await self.collector.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        if self._stopping.is_set():
            self._stop_event.set()
        try:
            await self.collector.run(self._stop_event)
        except BaseException as exc:
            self._error = exc
