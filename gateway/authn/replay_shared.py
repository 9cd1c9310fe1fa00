"""A replay cache shared by worker processes, served by the supervisor over a Unix socket.

With several workers on one ``SO_REUSEPORT`` port, a replayed proof sent on a new connection may
land on another worker; a per-process cache would not see it. The supervisor holds the one
``InMemoryReplayCache``; workers ask it. One persistent connection per worker, pipelined: the
server answers in order, so the client matches answers to questions with a FIFO of futures.

Wire format, one line each way: ``<hash of scope and value>\\t<expires_at>\\n`` -> ``1\\n`` (new)
or ``0\\n`` (seen). Hashing first means no tab or newline can reach the wire.
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
        self._clients: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=self.path)

    async def close(self) -> None:
        """Stop answering, open connections included: workers then fail closed."""
        if self._server is not None:
            self._server.close()
            for w in list(self._clients):
                w.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer every complete line of each read with one write (workers batch too)."""
        pending = b""
        self._clients.add(writer)
        try:
            while chunk := await reader.read(65536):
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()
                if len(pending) > 256:
                    break  # no question is that long: a confused or hostile peer
                answers = bytearray()
                for line in lines:
                    try:
                        key, exp = line.decode("ascii").split("\t")
                        ok = self.cache.check_and_store_now("", key, float(exp))
                    except ValueError:
                        ok = False  # a malformed question is treated as a replay: fail closed
                    answers += b"1\n" if ok else b"0\n"
                writer.write(bytes(answers))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()


class _Connection:
    """One connection to the supervisor with its own FIFO of waiters and outgoing batch."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiters: collections.deque[asyncio.Future[bool]] = collections.deque()
        self.outbox: list[bytes] = []
        self.task = asyncio.create_task(self._read(reader))

    @property
    def usable(self) -> bool:
        return not self.task.done() and not self.writer.is_closing()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        pending = b""
        try:
            while chunk := await reader.read(65536):
                answers = (pending + chunk).split(b"\n")
                pending = answers.pop()
                for answer in answers:
                    if self.waiters:
                        fut = self.waiters.popleft()
                        if not fut.done():
                            fut.set_result(answer == b"1")
        except (ConnectionError, OSError):
            pass
        finally:
            self.writer.close()
            while self.waiters:  # fail closed: nobody knows whether these were replays
                fut = self.waiters.popleft()
                if not fut.done():
                    fut.set_result(False)

    def ask(self, line: bytes) -> asyncio.Future[bool]:
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outbox.append(line)
        return fut

    def _flush(self) -> None:
        out, self.outbox = self.outbox, []
        if not self.writer.is_closing():
            self.writer.write(b"".join(out))
        # else: the reader's cleanup fails the waiters closed


class SharedReplayCache:
    """The worker side. Fails closed: if the supervisor cannot answer, the proof is refused.

    Questions asked in one event-loop turn go out in one write, and each waits on a plain
    future with a timer: the hot path costs one hash, one future and a shared syscall.
    """

    def __init__(self, path: str, timeout: float = 2.0) -> None:
        self.path = path
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable:
            return conn
        async with self._lock:
            if self._conn is None or not self._conn.usable:
                reader, writer = await asyncio.open_unix_connection(self.path)
                self._conn = _Connection(reader, writer)
            return self._conn

    async def check_and_store(self, scope: str, value: str, expires_at: float) -> bool:
        try:
            conn = await self._connection()
        except OSError:
            log.error("replay service unavailable: refusing the proof")
            return False
        fut = conn.ask(f"{_h(scope + chr(0) + value)}\t{expires_at:.3f}\n".encode("ascii"))
        timer = asyncio.get_running_loop().call_later(self.timeout, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.writer.close()
            self._conn.task.cancel()
            with contextlib.suppress(BaseException):
                await self._conn.task


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        log.error("replay service did not answer in time: refusing the proof")
        fut.set_result(False)
