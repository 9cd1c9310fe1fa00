"""A credential in a named header, for APIs that want ``X-Api-Token`` or similar."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.model import Credential, Destination


class HeaderInjector:
    kind = "header"

    def __init__(self, name: str, prefix: str = "") -> None:
        self.name = name
        self.prefix = prefix

    def inject(self, headers: CIMultiDict[str], credential: Credential, dest: Destination) -> None:
        headers[self.name] = self.prefix + credential.token
