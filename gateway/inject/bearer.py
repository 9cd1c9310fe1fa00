"""RFC 6750 section 2.1: ``Authorization: Bearer <token>``."""

from __future__ import annotations

from gateway.inject.base import Outgoing
from gateway.model import Credential


class BearerInjector:
    kind = "bearer"
    needs_body = False

    def inject(self, out: Outgoing, credential: Credential) -> None:
        headers = out.headers
        headers["Authorization"] = f"Bearer {credential.token}"
