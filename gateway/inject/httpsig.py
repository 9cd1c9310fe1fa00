"""WIMSE HTTP Message Signature of the outgoing request (draft-ietf-wimse-http-signature 3).

The credential is a WIT the gateway minted with a fresh key (``token: wit``); the request is
signed with that key: ``@method``, ``@request-target``, ``workload-identity-token`` and, when
present, ``content-type``, ``content-digest``, ``authorization`` and ``txn-token`` (so add the
injectors of those headers first). A body gets a ``Content-Digest`` (RFC 9530), which is why
this injector reads the body whole, bounded by ``limits.max_buffered_body_bytes``: the digest
has to go out in the header section, before the body. Every signature has a fresh nonce and
``wimse-aud`` = the target URI without query and fragment; ``keyid`` and ``alg`` are never
sent, since the verifier takes both from the WIT.
"""

from __future__ import annotations

import base64
import secrets

import jwt
from http_sf.compat import Item

from gateway.clock import Clock
from gateway.errors import ExchangeError, Reason
from gateway.httpsig import ALWAYS, BASE, TAG, WHEN_PRESENT, HeaderLines, Message, content_digest
from gateway.inject.base import Outgoing
from gateway.model import Credential

WIT_HEADER = "Workload-Identity-Token"


class HttpSigInjector:
    kind = "httpsig"
    needs_body = True

    def __init__(self, clock: Clock, lifetime: int = 60, label: str = "wimse") -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.label = label

    def inject(self, out: Outgoing, credential: Credential) -> None:
        key = credential.proof_key
        if key is None:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "the httpsig injector needs a WIT "
                                "minted with its key (token: wit)")
        headers, dest = out.headers, out.dest
        headers[WIT_HEADER] = credential.token
        headers.popall("Content-Digest", None)  # never sign a digest we did not compute
        if out.body:
            headers["Content-Digest"] = content_digest(out.body)
        for name in ("Signature", "Signature-Input"):
            headers.popall(name, None)
        covered = list(ALWAYS) + [h for h in WHEN_PRESENT if h in headers]
        now = int(self.clock.now())
        params = {"created": now, "expires": now + self.lifetime,
                  "nonce": secrets.token_urlsafe(16), "tag": TAG,
                  "wimse-aud": dest.target_uri}
        message = Message(dest.method, str(dest.url), HeaderLines(list(headers.items())))
        base, sig_input = BASE.base_and_input(message, [Item(c) for c in covered], params)
        signature = jwt.get_algorithm_by_name(key.alg).sign(base.encode("ascii"),
                                                             key.private_key)
        headers["Signature-Input"] = f"{self.label}={sig_input}"
        headers["Signature"] = f"{self.label}=:{base64.b64encode(signature).decode()}:"
