"""Replay detection for proof ``jti`` values and signature nonces.

Entries live exactly as long as the proof they came from could still be accepted; memory is
bounded, and when full the entries closest to expiry go first (they are the least useful).
``ReplayCache`` is a small interface so a shared backend (Redis ``SET NX EX``) can serve several
replicas.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Protocol

from gateway.clock import Clock


class ReplayCache(Protocol):
    async def check_and_store(self, scope: str, value: str, expires_at: float) -> bool:
        """Record ``value`` for ``scope`` until ``expires_at``; False if it was already there."""
        ...


class InMemoryReplayCache:
    """A dict plus an expiry heap. O(log n) per proof."""

    def __init__(self, clock: Clock, max_entries: int = 200_000) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._seen: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self.evicted_early = 0

    def __len__(self) -> int:
        return len(self._seen)

    async def check_and_store(self, scope: str, value: str, expires_at: float) -> bool:
        return self.check_and_store_now(scope, value, expires_at)

    def check_and_store_now(self, scope: str, value: str, expires_at: float) -> bool:
        now = self.clock.now()
        self._expire(now)
        # Hash: a 4 KiB jti costs 32 bytes here, and nothing attacker-chosen is kept verbatim.
        key = hashlib.sha256(f"{scope}\0{value}".encode()).digest()
        if key in self._seen and self._seen[key] > now:
            return False
        while len(self._seen) >= self.max_entries and self._heap:
            _, old = heapq.heappop(self._heap)
            if self._seen.pop(old, None) is not None:
                self.evicted_early += 1
        self._seen[key] = expires_at
        heapq.heappush(self._heap, (expires_at, key))
        return True

    def _expire(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            exp, key = heapq.heappop(heap)
            if self._seen.get(key) == exp:
                del self._seen[key]
