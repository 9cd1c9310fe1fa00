"""Credential cache: one exchange in flight per key, LRU-bounded, refreshed ahead of expiry.

An exchange runs in its own task so a caller that disconnects does not cancel it for the others
waiting on the same key. Failures are remembered for a short time so a broken token service is
not hammered by every request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.model import Credential

Fetch = Callable[[], Awaitable[Credential]]


@dataclass(slots=True)
class _Entry:
    credential: Credential
    refresh_at: float
    refreshing: bool = False


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    refreshes: int = 0
    negative_hits: int = 0


class CredentialCache:
    """Maps a key to a credential until shortly before it expires.

    ``refresh_ahead`` is the fraction of a credential's lifetime after which a background refresh
    starts while the old one keeps being served; ``expiry_margin`` seconds before ``exp`` an entry
    is no longer handed out at all.
    """

    def __init__(
        self,
        clock: Clock,
        max_entries: int = 10_000,
        refresh_ahead: float = 0.8,
        expiry_margin: float = 5.0,
        negative_ttl: float = 2.0,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self.refresh_ahead = refresh_ahead
        self.expiry_margin = expiry_margin
        self.negative_ttl = negative_ttl
        self.stats = CacheStats()
        self._on_event = on_event or (lambda _e: None)
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._failures: dict[Hashable, tuple[float, GatewayError]] = {}
        self._inflight: dict[Hashable, asyncio.Task[Credential]] = {}
        self._background: set[asyncio.Task[Credential]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def _usable(self, entry: _Entry, now: float, not_after: float | None) -> bool:
        cred = entry.credential
        if cred.expires_at - self.expiry_margin <= now:
            return False
        # A credential cached for an earlier, longer-lived caller credential must not be handed
        # to a request whose credential expires sooner.
        return not (not_after is not None and cred.expires_at > not_after + 1.0)

    async def get(self, key: Hashable, fetch: Fetch, not_after: float | None = None) -> Credential:
        now = self.clock.now()
        entry = self._entries.get(key)
        if entry is not None and self._usable(entry, now, not_after):
            self._entries.move_to_end(key)
            self.stats.hits += 1
            self._on_event("hit")
            if now >= entry.refresh_at and not entry.refreshing and key not in self._inflight:
                entry.refreshing = True
                self.stats.refreshes += 1
                self._on_event("refresh")
                task = self._start(key, fetch)
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            return entry.credential
        failure = self._failures.get(key)
        if failure is not None:
            if failure[0] > now:
                self.stats.negative_hits += 1
                raise failure[1]
            del self._failures[key]
        self.stats.misses += 1
        self._on_event("miss")
        task = self._inflight.get(key) or self._start(key, fetch)
        return await asyncio.shield(task)

    def _start(self, key: Hashable, fetch: Fetch) -> asyncio.Task[Credential]:
        task = asyncio.create_task(self._run(key, fetch))
        self._inflight[key] = task
        # Retrieve the exception even if nobody awaits (refresh-ahead), to avoid loop warnings.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _run(self, key: Hashable, fetch: Fetch) -> Credential:
        try:
            cred = await fetch()
        except GatewayError as exc:
            old = self._entries.get(key)
            if old is not None:
                old.refreshing = False  # try again on a later request
            self._failures[key] = (self.clock.now() + self.negative_ttl, exc)
            raise
        finally:
            self._inflight.pop(key, None)
        now = self.clock.now()
        lifetime = max(0.0, cred.expires_at - now)
        self._entries[key] = _Entry(cred, now + lifetime * self.refresh_ahead)
        self._entries.move_to_end(key)
        self._failures.pop(key, None)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.stats.evictions += 1
            self._on_event("eviction")
        return cred

    async def close(self) -> None:
        tasks = list(self._inflight.values()) + list(self._background)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
