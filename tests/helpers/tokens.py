"""Make JWTs, WITs, WPTs and DPoP proofs for tests, including deliberately broken ones."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.keys import b64url, public_jwk


@dataclass
class Key:
    private: Any
    alg: str
    kid: str

    @classmethod
    def es256(cls, kid: str | None = None) -> Key:
        return cls(ec.generate_private_key(ec.SECP256R1()), "ES256", kid or secrets.token_hex(4))

    @classmethod
    def ed25519(cls, kid: str | None = None) -> Key:
        return cls(ed25519.Ed25519PrivateKey.generate(), "EdDSA", kid or secrets.token_hex(4))

    @property
    def jwk(self) -> dict[str, str]:
        return {**public_jwk(self.private.public_key()), "kid": self.kid, "alg": self.alg}

    @property
    def bare_jwk(self) -> dict[str, str]:
        return public_jwk(self.private.public_key())

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        hdr = {"kid": self.kid, **headers}
        if hdr.get("kid") is None:
            hdr.pop("kid")
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=hdr)


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [k.jwk for k in keys]}


def unsigned(claims: dict[str, Any], **headers: Any) -> str:
    """An `alg: none` token (RFC 7519 6.1)."""
    h = {"alg": "none", **headers}
    enc = lambda o: b64url(json.dumps(o).encode())  # noqa: E731
    return f"{enc(h)}.{enc(claims)}."


def hs256_with_public_key(claims: dict[str, Any], key: Key, **headers: Any) -> str:
    """The classic confusion attack: HMAC keyed with the verifier's public key PEM."""
    h = {"alg": "HS256", "kid": key.kid, **headers}
    enc = lambda o: b64url(json.dumps(o, separators=(",", ":")).encode())  # noqa: E731
    signing_input = f"{enc(h)}.{enc(claims)}".encode()
    import hmac

    sig = hmac.new(key.public_pem(), signing_input, hashlib.sha256).digest()
    return signing_input.decode() + "." + b64url(sig)


def sha(value: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(value.encode()).digest()).rstrip(b"=").decode()


def make_wit(issuer: Key, sub: str, workload: Key, lifetime: int = 3600,
             now: float | None = None, **extra: Any) -> str:
    now = int(now or time.time())
    claims = {"sub": sub, "exp": now + lifetime, "iat": now,
              "cnf": {"jwk": {**workload.bare_jwk, "alg": workload.alg}}, **extra}
    return issuer.sign(claims, typ="wit+jwt")


def make_wpt(workload: Key, wit: str, aud: str, lifetime: int = 60, now: float | None = None,
             access_token: str | None = None, txn_token: str | None = None,
             typ: str = "wpt+jwt", **extra: Any) -> str:
    now = int(now or time.time())
    claims: dict[str, Any] = {"aud": aud, "exp": now + lifetime, "jti": secrets.token_urlsafe(16),
                              "wth": sha(wit), **extra}
    if access_token is not None:
        claims["ath"] = sha(access_token)
    if txn_token is not None:
        claims["tth"] = sha(txn_token)
    return jwt.encode(claims, workload.private, algorithm=workload.alg, headers={"typ": typ})


def make_dpop(key: Key, htm: str, htu: str, access_token: str | None = None,
              iat: float | None = None, typ: str = "dpop+jwt", **extra: Any) -> str:
    claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": htm, "htu": htu,
                              "iat": int(iat or time.time()), **extra}
    if access_token is not None:
        claims["ath"] = sha(access_token)
    return jwt.encode(claims, key.private, algorithm=key.alg,
                      headers={"typ": typ, "jwk": key.bare_jwk})
