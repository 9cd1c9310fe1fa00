"""The authenticator interface and the chain that picks one per request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.model import ANONYMOUS, Caller, Inbound


class Authenticator(Protocol):
    """Verifies one mechanism.

    ``present`` says whether the request carries this mechanism's credential at all;
    ``authenticate`` verifies it and returns the caller, or raises AuthnError. It never returns
    a refusal as a value.
    """

    name: str

    def present(self, inbound: Inbound) -> bool: ...

    async def authenticate(self, inbound: Inbound) -> Caller: ...


class AuthenticatorChain:
    """Tries mechanisms in a fixed order; the first whose credential is present decides.

    A request that carries a credential which fails verification is refused even if another
    mechanism would have succeeded: falling through would let an attacker strip a bad proof and
    retry with a weaker credential in the same request.
    """

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = tuple(authenticators)

    async def authenticate(self, inbound: Inbound) -> Caller:
        for authn in self.authenticators:
            if authn.present(inbound):
                return await authn.authenticate(inbound)
        return ANONYMOUS
