"""RFC 6750 section 2.1: ``Authorization: Bearer <token>``."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.model import Credential, Destination


class BearerInjector:
    kind = "bearer"

    def inject(self, headers: CIMultiDict[str], credential: Credential, dest: Destination) -> None:
        headers["Authorization"] = f"Bearer {credential.token}"
