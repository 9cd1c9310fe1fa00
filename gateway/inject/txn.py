"""``Txn-Token`` header (draft-ietf-oauth-transaction-tokens): exactly one, never in
``Authorization``; it replaces any Txn-Token the caller sent (ours carries its ``txn`` on)."""

from __future__ import annotations

from gateway.inject.base import Outgoing
from gateway.model import Credential


class TxnTokenInjector:
    kind = "txn_token"
    needs_body = False

    def inject(self, out: Outgoing, credential: Credential) -> None:
        headers = out.headers
        headers.popall("Txn-Token", None)
        headers["Txn-Token"] = credential.token
