"""RFC 9449 section 7.1: ``Authorization: DPoP <token>`` and a fresh proof per request, with
``htm``, ``htu`` (the target URI without query and fragment) and ``ath``."""

from __future__ import annotations

from gateway.clock import Clock
from gateway.errors import ExchangeError, Reason
from gateway.inject.base import Outgoing
from gateway.keys import dpop_proof
from gateway.model import Credential


class DpopInjector:
    kind = "dpop"
    needs_body = False

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def inject(self, out: Outgoing, credential: Credential) -> None:
        headers, dest = out.headers, out.dest
        key = credential.proof_key
        if key is None or credential.token_type != "DPoP":
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the dpop injector needs a DPoP-bound "
                                "token (exchange with dpop: true)")
        headers["Authorization"] = f"DPoP {credential.token}"
        headers["DPoP"] = dpop_proof(key, dest.method, dest.target_uri, self.clock.now(),
                                     access_token=credential.token)
