"""The exchanger interface."""

from __future__ import annotations

from typing import Protocol

from gateway.model import Caller, Credential, Destination


class Exchanger(Protocol):
    """Obtains the destination's credential for a caller.

    ``max_lifetime`` is what the guard rails allow (seconds); an exchanger asks for no more,
    and the pipeline checks what came back anyway. ``cache_key`` names what makes two requests
    share a credential (audience, scope, ...), beyond the caller identity and profile.
    """

    kind: str

    def cache_key(self, caller: Caller, dest: Destination) -> tuple[str, ...]: ...

    async def exchange(
        self, caller: Caller, dest: Destination, max_lifetime: float
    ) -> Credential: ...
