"""Signing keys, JWK export and RFC 7638 thumbprints.

Private keys stay in this module's objects: ``SigningKey.__repr__`` never shows key material, and
the JWK export emits public members only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_b64(n: int, length: int | None = None) -> str:
    length = length or (n.bit_length() + 7) // 8
    return b64url(n.to_bytes(length, "big"))


def public_jwk(public_key: Any) -> dict[str, str]:
    """The public JWK members of a cryptography public key (no private members ever)."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        nums = public_key.public_numbers()
        crv, size = {
            "secp256r1": ("P-256", 32),
            "secp384r1": ("P-384", 48),
            "secp521r1": ("P-521", 66),
        }[public_key.curve.name]
        return {"kty": "EC", "crv": crv, "x": _int_b64(nums.x, size), "y": _int_b64(nums.y, size)}
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    if isinstance(public_key, rsa.RSAPublicKey):
        nums = public_key.public_numbers()
        return {"kty": "RSA", "n": _int_b64(nums.n), "e": _int_b64(nums.e)}
    raise TypeError(f"unsupported key type {type(public_key).__name__}")


_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"),
                       "OKP": ("crv", "kty", "x"), "oct": ("k", "kty")}


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint: required members only, sorted, no whitespace."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty", ""))
    if members is None:
        raise ValueError("unsupported kty")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def alg_for(private_key: PrivateKey) -> str:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[
            private_key.curve.name
        ]
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(private_key, rsa.RSAPrivateKey):
        return "RS256"
    raise TypeError("unsupported key type")


@dataclass(frozen=True)
class SigningKey:
    """A private key with its JWS algorithm and key id."""

    private_key: PrivateKey = field(repr=False)
    alg: str
    kid: str

    @classmethod
    def from_private_key(cls, key: PrivateKey, kid: str | None = None) -> SigningKey:
        jwk = public_jwk(key.public_key())
        return cls(key, alg_for(key), kid or jwk_thumbprint(jwk))

    @property
    def public_jwk(self) -> dict[str, str]:
        return {**public_jwk(self.private_key.public_key()), "kid": self.kid, "alg": self.alg,
                "use": "sig"}


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                            rsa.RSAPrivateKey)):
        raise ValueError("unsupported private key type")
    return key


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path, key: PrivateKey) -> None:
    """Write a PEM private key readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_key_pem(key))


def load_or_create_key(path: Path) -> PrivateKey:
    """Load an ES256 key from ``path``, generating it on first use."""
    if path.exists():
        return load_private_key(path)
    key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(path, key)
    return key


def jwks(keys: list[SigningKey]) -> dict[str, Any]:
    return {"keys": [k.public_jwk for k in keys]}
