"""The exchanger interface."""

from __future__ import annotations

from collections.abc import Iterable
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


# Claims about the credential itself rather than the caller: never "lost" in a translation.
BOOKKEEPING_CLAIMS = frozenset({"exp", "iat", "nbf", "jti", "aud", "iss", "cnf"})


def dropped_claims(caller: Caller, kept: Iterable[str]) -> tuple[str, ...]:
    """The caller's claims the new credential does not carry, for the translation record."""
    return tuple(sorted(set(caller.claims) - BOOKKEEPING_CLAIMS - set(kept)))
