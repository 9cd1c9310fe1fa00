"""WIMSE HTTP Message Signatures (draft-ietf-wimse-http-signature section 3, over RFC 9421).

The WIT names the workload and its key (``cnf.jwk``); an RFC 9421 signature made with that key
covers the request. The ``http-message-signatures`` package parses ``Signature-Input`` /
``Signature`` (structured fields) and builds the signature base; the signature itself is a JWS
signature over that base (RFC 9421 3.3.7) with the WIT's ``cnf.jwk.alg``, checked by our JOSE
layer. ``keyid`` and ``alg`` must be absent: the key comes from the WIT, never from the message.
Failures answer 400, as the WIMSE drafts ask. With a body, ``Content-Digest`` (RFC 9530) must be
covered and must match the body, which is read (bounded) before anything is forwarded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import http_sf
from http_message_signatures.exceptions import HTTPMessageSignaturesException
from http_sf.compat import InnerList, Item

from gateway.authn.jose import Jws, verify_signature
from gateway.authn.replay import ReplayCache
from gateway.authn.request import normalize_uri, single_header
from gateway.authn.wit import STATUS, WIT_HEADER, TrustDomainKeys, VerifiedWit, verify_wit
from gateway.clock import Clock
from gateway.errors import AuthnError, Reason
from gateway.httpsig import ALWAYS, REQUIRED_PARAMS, TAG, WHEN_PRESENT, HeaderLines, Message
from gateway.httpsig import BASE as _BASE
from gateway.model import AuthnMethod, Caller, Inbound

MAX_SIGNATURE_LIFETIME = 300.0
DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def _err(reason: Reason, detail: str) -> AuthnError:
    return AuthnError(reason, detail, status_override=STATUS)




@dataclass(frozen=True)
class VerifiedSignature:
    label: str
    params: dict[str, Any]
    covered: tuple[str, ...]


def verify_request_signature(
    method: str, url: str, header_pairs: list[tuple[str, str]], key: Any, alg: str,
    targets: frozenset[str], now: float, skew: float = 5.0,
) -> VerifiedSignature:
    """Check one WIMSE request signature made with ``key``; no replay or digest check here."""
    lookup = {}
    for k, v in header_pairs:
        lookup.setdefault(k.lower(), []).append(v)
    for name in ("signature-input", "signature"):
        if len(lookup.get(name, ())) != 1:
            raise _err(Reason.AUTHN_DUPLICATE if lookup.get(name) else Reason.AUTHN_MISSING,
                       f"exactly one {name} header is needed")
    try:
        inputs = _BASE.parse(lookup["signature-input"][0])
        sigs = _BASE.parse(lookup["signature"][0])
    except (HTTPMessageSignaturesException, ValueError, TypeError):
        raise _err(Reason.AUTHN_MALFORMED, "Signature-Input or Signature is malformed") from None
    # Prefer the `wimse` label; accept exactly one signature otherwise.
    labels = [k for k, v in inputs.items() if isinstance(v, InnerList)
              and v.params.get("tag") == TAG]
    if "wimse" in labels:
        labels = ["wimse"]
    if len(labels) != 1 or labels[0] not in sigs:
        raise _err(Reason.AUTHN_MISSING, "no single signature with the WIMSE tag")
    label = labels[0]
    sig_input, sig_item = inputs[label], sigs[label]
    if not isinstance(sig_item, Item) or not isinstance(sig_item.value, bytes):
        raise _err(Reason.AUTHN_MALFORMED, "signature value is not a byte sequence")
    params = dict(sig_input.params)
    if "keyid" in params or "alg" in params:
        # SECURITY: the key and algorithm come from the WIT; a message-chosen key is refused.
        raise _err(Reason.AUTHN_ALG_NOT_ALLOWED, "keyid and alg must not be signature parameters")
    for p in REQUIRED_PARAMS:
        if p not in params:
            raise _err(Reason.AUTHN_MISSING_CLAIM, f"signature parameter {p} missing")
    covered = [str(c.value) for c in sig_input if isinstance(c, Item)]
    if len(covered) != len(sig_input):
        raise _err(Reason.AUTHN_MALFORMED, "covered components must be strings")
    for comp in ALWAYS:
        if comp not in covered:
            raise _err(Reason.AUTHN_MISSING_CLAIM, f"signature does not cover {comp}")
    for comp in WHEN_PRESENT:
        if comp in lookup and comp not in covered:
            raise _err(Reason.AUTHN_MISSING_CLAIM, f"signature does not cover {comp}")
    created, expires = params["created"], params["expires"]
    if type(created) is not int or type(expires) is not int or not isinstance(
            params["nonce"], str) or not isinstance(params["wimse-aud"], str):
        raise _err(Reason.AUTHN_MALFORMED, "signature parameters have the wrong types")
    if created > now + skew:
        raise _err(Reason.AUTHN_NOT_YET_VALID, "signature created in the future")
    if expires + skew <= now:
        raise _err(Reason.AUTHN_EXPIRED, "signature expired")
    if expires - created > MAX_SIGNATURE_LIFETIME:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "signature lives too long")
    if normalize_uri(params["wimse-aud"]) not in targets:
        raise _err(Reason.AUTHN_WRONG_AUDIENCE, "wimse-aud is not this request's target")
    try:
        base = _BASE.base(Message(method, url, HeaderLines(header_pairs)), list(sig_input),
                          sig_input.params)
    except (HTTPMessageSignaturesException, ValueError, KeyError):
        raise _err(Reason.AUTHN_MALFORMED, "cannot build the signature base") from None
    jws = Jws("", {}, {}, base.encode("ascii"), sig_item.value)
    if not verify_signature(jws, alg, key):
        raise _err(Reason.AUTHN_BAD_SIGNATURE, "HTTP signature does not verify")
    return VerifiedSignature(label, params, tuple(covered))


def verify_content_digest(value: str | None, body: bytes) -> None:
    """RFC 9530: at least one known algorithm, and every known one must match."""
    if value is None:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "a body needs a Content-Digest")
    try:
        parsed = http_sf.parse(value.encode(), tltype="dictionary")
    except Exception:
        raise _err(Reason.AUTHN_MALFORMED, "Content-Digest is malformed") from None
    checked = 0
    for alg, (digest, _params) in parsed.items():
        fn = DIGESTS.get(alg)
        if fn is None:
            continue
        if not isinstance(digest, bytes | bytearray) or not hmac.compare_digest(
                bytes(digest), fn(body).digest()):
            raise _err(Reason.AUTHN_DIGEST_MISMATCH, "Content-Digest does not match the body")
        checked += 1
    if not checked:
        raise _err(Reason.AUTHN_MISSING_CLAIM, "Content-Digest uses no supported algorithm")


class HttpSigAuthenticator:
    """WIT + WIMSE HTTP message signature."""

    name = AuthnMethod.HTTPSIG.value

    def __init__(self, trust: dict[str, TrustDomainKeys], replay: ReplayCache, clock: Clock,
                 wit_cache: Callable[[str, float], Awaitable[VerifiedWit]] | None = None) -> None:
        self.trust = trust
        self.replay = replay
        self.clock = clock
        self._wit = wit_cache or (lambda raw, now: verify_wit(raw, self.trust.get, now))

    def present(self, inbound: Inbound) -> bool:
        return "Signature-Input" in inbound.headers and WIT_HEADER in inbound.headers

    async def authenticate(self, inbound: Inbound) -> Caller:
        wit_raw = single_header(inbound, WIT_HEADER, status=STATUS)
        assert wit_raw is not None
        now = self.clock.now()
        # WIMSE: validate the WIT before the signature.
        wit = await self._wit(wit_raw, now)
        skew = self.trust[wit.trust_domain].skew
        pairs = list(inbound.headers.items())
        sig = verify_request_signature(inbound.method, str(inbound.target), pairs, wit.cnf_key,
                                       wit.cnf_alg, inbound.targets, now, min(skew, 30.0))
        if inbound.has_body:
            if "content-digest" not in sig.covered:
                raise _err(Reason.AUTHN_MISSING_CLAIM, "a body needs a signed Content-Digest")
            body = await inbound.read_body()
            verify_content_digest(inbound.headers.get("Content-Digest"), body)
        if not await self.replay.check_and_store("sig:" + wit.jkt, sig.params["nonce"],
                                           float(sig.params["expires"]) + skew):
            raise _err(Reason.AUTHN_REPLAYED, "signature nonce already used")
        return Caller(
            identity=wit.identity, trust_domain=wit.trust_domain, method=AuthnMethod.HTTPSIG,
            proof_of_possession=True, expires_at=wit.expires_at, claims=wit.claims,
            key_thumbprint=wit.jkt, credential_id="wit:" + wit.token_hash,
        )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
