"""Present a certificate the gateway issued for the caller (``exchange: x509``) on the upstream
TLS connection. Connections are pooled per certificate, so one caller's connection is never
reused for another's request."""

from __future__ import annotations

from gateway.errors import ExchangeError, Reason
from gateway.inject.base import ClientCertificate, Outgoing
from gateway.model import Credential


class MtlsInjector:
    kind = "mtls"
    needs_body = False

    def inject(self, out: Outgoing, credential: Credential) -> None:
        if credential.proof_key is None or "BEGIN CERTIFICATE" not in credential.token:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the mtls injector needs a certificate "
                                "(exchange type x509)")
        out.client_certificate = ClientCertificate(
            credential.token_id, credential.token.encode("ascii"),
            credential.proof_key.private_key)
        out.notes["client_certificate"] = credential.token_id
