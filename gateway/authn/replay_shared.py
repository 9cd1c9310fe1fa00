"""A replay cache shared by worker processes, served by the supervisor over a Unix socket.

With several workers on one ``SO_REUSEPORT`` port, a replayed proof sent on a new connection may
land on another worker; a per-process cache would not see it. The supervisor holds the one
``InMemoryReplayCache``; workers ask it. One persistent connection per worker, pipelined: the
server answers in order, so the client matches answers to questions with a FIFO of futures.

Wire format, one line each way: ``<scope>\\t<value>\\t<expires_at>\\n`` -> ``1\\n`` (new) or
``0\\n`` (seen). Scope and value are hashed first, so no tab or newline can reach the wire.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging

from gateway.authn.replay import InMemoryReplayCache

log = logging.getLogger("wimse_gateway.replay")


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ReplayServer:
    def __init__(self, cache: InMemoryReplayCache, path: str) -> None:
        self.cache = cache
        self.path = path
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    scope, value, exp = line.decode("ascii").rstrip("\n").split("\t")
                    ok = self.cache.check_and_store_now(scope, value, float(exp))
                except ValueError:
                    ok = False  # a malformed question is treated as a replay: fail closed
                writer.write(b"1\n" if ok else b"0\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class SharedReplayCache:
    """The worker side. Fails closed: if the supervisor cannot answer, the proof is refused."""

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        self.path = path
        self.timeout = timeout
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._reader_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._lock:
            if self._writer is None or self._writer.is_closing():
                reader, writer = await asyncio.open_unix_connection(self.path)
                self._writer = writer
                self._reader_task = asyncio.create_task(self._read(reader))
            return self._writer

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                if self._waiters:
                    fut = self._waiters.popleft()
                    if not fut.done():
                        fut.set_result(line == b"1\n")
        finally:
            self._writer = None
            while self._waiters:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result(False)

    async def check_and_store(self, scope: str, value: str, expires_at: float) -> bool:
        try:
            writer = await self._connect()
            fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            writer.write(f"{_h(scope)}\t{_h(value)}\t{expires_at:.3f}\n".encode("ascii"))
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except (OSError, TimeoutError):
            log.error("replay service unavailable: refusing the proof")
            return False

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reader_task
