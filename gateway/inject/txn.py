"""``Txn-Token`` header (draft-ietf-oauth-transaction-tokens): exactly one, never in
``Authorization``; it replaces any Txn-Token the caller sent (ours carries its ``txn`` on)."""

from __future__ import annotations

from multidict import CIMultiDict

from gateway.model import Credential, Destination


class TxnTokenInjector:
    kind = "txn_token"

    def inject(self, headers: CIMultiDict[str], credential: Credential, dest: Destination) -> None:
        headers.popall("Txn-Token", None)
        headers["Txn-Token"] = credential.token
