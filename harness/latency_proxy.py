"""A TCP proxy that can make a server slow: the chaos run's processes reach PostgreSQL through
it for the whole run, and the ``slow-postgres`` fault turns latency on for a few seconds.

A standard fault proxy (toxiproxy) is not installable everywhere this runs, and the fault needs
only one thing, so this is a small asyncio proxy on an event loop of its own thread:

- bytes pass through unchanged and in order: each direction of a connection is one loop that
  reads a chunk, waits the latency (when it is on), writes it and waits until it is written
  (``drain``), so nothing is reordered and at most one chunk per direction is held in memory;
- ``slow(low, high)`` delays every forwarded chunk, both directions, by a random time in
  ``[low, high]`` seconds until ``fast()``; a chunk read while it was on keeps its delay;
- bounded: at most ``max_connections`` connections at once (beyond that a client is closed at
  once, as a full server would), ``chunk_size`` bytes per read, ``connect_timeout`` to reach
  the upstream; when the upstream is away (a PostgreSQL restart) the client's connection is
  closed at once, so the client fails fast instead of hanging;
- when either side closes or breaks, both sides are closed; ``stop()`` closes the listening
  socket and every connection, and returns when the thread has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from dataclasses import dataclass


@dataclass
class ProxyStats:
    connections: int = 0  # accepted and joined to the upstream
    refused: int = 0  # closed at once: too many connections, or the upstream unreachable
    chunks: int = 0
    bytes: int = 0
    delayed_chunks: int = 0
    delay_seconds: float = 0.0


class LatencyProxy:
    """``127.0.0.1:<port>`` forwarding to ``upstream_host:upstream_port``; see the module."""

    def __init__(
        self,
        *,
        upstream_host: str,
        upstream_port: int,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 500,
        chunk_size: int = 64 * 1024,
        connect_timeout: float = 5.0,
        rng: random.Random | None = None,
    ):
        if max_connections < 1 or chunk_size < 1 or connect_timeout <= 0:
            raise ValueError("max_connections, chunk_size and connect_timeout must be positive")
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.chunk_size = chunk_size
        self.connect_timeout = connect_timeout
        self.rng = rng or random.Random()
        self.stats = ProxyStats()
        self._latency: tuple[float, float] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[asyncio.Task] = set()

    # --- the caller's side (any thread) -----------------------------------------------------

    def start(self, timeout: float = 10.0) -> int:
        """Listen (on a free port when ``port`` is 0) and forward; returns the port."""
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # reported to start()'s caller
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="latency-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("the latency proxy did not start listening")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self.port

    @property
    def latency(self) -> tuple[float, float] | None:
        """(low, high) seconds per forwarded chunk while slow; None while fast."""
        return self._latency

    def slow(self, low: float, high: float) -> None:
        if not 0 <= low <= high:
            raise ValueError("latency needs 0 <= low <= high")
        self._latency = (low, high)

    def fast(self) -> None:
        self._latency = None

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listening socket and every connection; return once the thread ended."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    # --- the event loop's side --------------------------------------------------------------

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, client_reader, client_writer) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        upstream_writer = None
        try:
            if len(self._handlers) > self.max_connections:
                self.stats.refused += 1
                return
            try:
                upstream_reader, upstream_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), self.connect_timeout
                )
            except OSError:  # TimeoutError included
                self.stats.refused += 1
                return
            self.stats.connections += 1
            pipes = [
                asyncio.ensure_future(self._pipe(client_reader, upstream_writer)),
                asyncio.ensure_future(self._pipe(upstream_reader, client_writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        await writer.wait_closed()
            self._handlers.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: chunk by chunk, in order, delayed while slow; ends at EOF or error."""
        with contextlib.suppress(OSError):
            while chunk := await reader.read(self.chunk_size):
                latency = self._latency
                if latency is not None:
                    delay = self.rng.uniform(*latency)
                    self.stats.delayed_chunks += 1
                    self.stats.delay_seconds += delay
                    await asyncio.sleep(delay)
                writer.write(chunk)
                await writer.drain()
                self.stats.chunks += 1
                self.stats.bytes += len(chunk)
