"""A credential in a named header, for APIs that want ``X-Api-Token`` or similar."""

from __future__ import annotations

from gateway.inject.base import Outgoing
from gateway.model import Credential


class HeaderInjector:
    kind = "header"
    needs_body = False

    def __init__(self, name: str, prefix: str = "") -> None:
        self.name = name
        self.prefix = prefix

    def inject(self, out: Outgoing, credential: Credential) -> None:
        headers = out.headers
        headers[self.name] = self.prefix + credential.token
