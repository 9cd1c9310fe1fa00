"""Strict compact JWS for verifiers (RFC 7515, RFC 8725 "JWT best current practices").

pyjwt does the signature math; this module does the refusing first: size caps, strict base64url
(no padding, no stray characters), JSON objects only with no duplicate members, an algorithm
allow list that can never contain ``none`` or an HMAC, and a key whose type matches the
algorithm, so an HS256 token can never be checked with a public key used as a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

from gateway.errors import AuthnError, Reason

MAX_TOKEN_BYTES = 8192
_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")
_PYJWT = get_default_algorithms()
# RFC 9864 names Ed25519 as a fully-specified JWS alg; pyjwt knows it as EdDSA.
_ALGS = {**{a: _PYJWT[a] for a in _PYJWT}, "Ed25519": _PYJWT["EdDSA"]}

# Asymmetric JWS algorithms we verify, and the key type each needs (RFC 8725 3.1: never let the
# token pick the key type). No `none`, no HS*.
ASYMMETRIC: dict[str, str] = {
    "ES256": "EC", "ES384": "EC", "ES512": "EC",
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "EdDSA": "OKP", "Ed25519": "OKP",
}
_EC_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


def b64url_decode(part: str) -> bytes:
    if not _B64URL.match(part) or len(part) % 4 == 1:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate member {k}")
        out[k] = v
    return out


def parse_json_object(data: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("not a JSON object") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class Jws:
    """A parsed, not yet verified, compact JWS."""

    raw: str
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def parse_jws(token: str, *, status: int | None = None, what: str = "token") -> Jws:
    """Split and decode a compact JWS; raise ``authn.malformed`` on anything irregular."""
    def bad(msg: str) -> AuthnError:
        return AuthnError(Reason.AUTHN_MALFORMED, f"{what}: {msg}", status_override=status)

    if len(token) > MAX_TOKEN_BYTES:
        raise bad("too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise bad("not a compact JWS")
    try:
        header = parse_json_object(b64url_decode(parts[0]))
        claims = parse_json_object(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError as exc:
        raise bad(str(exc)) from None
    if "crit" in header:
        # RFC 7515 4.1.11: we understand no extensions, so a critical one means refuse
        raise bad("unsupported critical header parameters")
    return Jws(token, header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def check_alg(jws: Jws, allowed: frozenset[str], *, status: int | None = None,
              what: str = "token") -> str:
    alg = jws.header.get("alg")
    # SECURITY: alg=none and HMAC algorithms are never in ASYMMETRIC, whatever the allow list says.
    if not isinstance(alg, str) or alg not in ASYMMETRIC or alg not in allowed:
        raise AuthnError(Reason.AUTHN_MALFORMED, f"{what}: algorithm not allowed",
                         status_override=status)
    return alg


def key_from_jwk(jwk: dict[str, Any], alg: str) -> Any:
    """A public key object for ``jwk``, refusing private members and a kty/crv/alg mismatch."""
    kty = jwk.get("kty")
    if kty != ASYMMETRIC.get(alg):
        raise ValueError("key type does not match the algorithm")
    if alg in _EC_CURVE and jwk.get("crv") != _EC_CURVE[alg]:
        raise ValueError("curve does not match the algorithm")
    if kty == "OKP" and jwk.get("crv") != "Ed25519":
        raise ValueError("only Ed25519 OKP keys are supported")
    if any(m in jwk for m in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise ValueError("JWK carries private key material")
    if "alg" in jwk and jwk["alg"] != alg and not (
            {jwk["alg"], alg} <= {"EdDSA", "Ed25519"}):
        raise ValueError("JWK alg does not match")
    try:
        return _ALGS[alg].from_jwk(json.dumps(jwk))
    except (InvalidKeyError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unusable JWK: {exc}") from None


def verify_signature(jws: Jws, alg: str, key: Any) -> bool:
    try:
        return bool(_ALGS[alg].verify(jws.signing_input, key, jws.signature))
    except Exception:
        return False


def typ_is(header: dict[str, Any], expected: str) -> bool:
    """RFC 7515 4.1.9: `application/` may be omitted; compare case-insensitively."""
    typ = header.get("typ")
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    return typ in (expected, "application/" + expected)


def numeric(claims: dict[str, Any], name: str) -> float | None:
    v = claims.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{name} is not a number")
    return float(v)
