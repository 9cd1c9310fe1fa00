"""Signing keys, JWK export and RFC 7638 thumbprints.

Private keys stay in this module's objects: ``SigningKey.__repr__`` never shows key material, and
the JWK export emits public members only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sha256_b64url(value: str) -> str:
    """``b64url(SHA-256(ASCII(value)))``: WPT ``wth``/``ath``/``tth``, DPoP ``ath``."""
    return b64url(hashlib.sha256(value.encode("ascii", "surrogateescape")).digest())


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

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh P-256 (ES256) key, for a proof bound to one credential."""
        return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))

    @property
    def bare_jwk(self) -> dict[str, str]:
        """The public key members only: what a proof's ``jwk`` header or ``cnf.jwk`` carries."""
        return public_jwk(self.private_key.public_key())

    @property
    def public_jwk(self) -> dict[str, str]:
        return {**self.bare_jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


def dpop_proof(key: SigningKey, htm: str, htu: str, now: float, nonce: str | None = None,
               access_token: str | None = None) -> str:
    """An RFC 9449 proof: fresh jti, iat now, the public key in the header; ``ath`` when it
    goes with an access token, ``nonce`` when the server asked for one."""
    claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": htm, "htu": htu,
                              "iat": int(now)}
    if nonce is not None:
        claims["nonce"] = nonce
    if access_token is not None:
        claims["ath"] = sha256_b64url(access_token)
    return jwt.encode(claims, key.private_key, algorithm=key.alg,
                      headers={"typ": "dpop+jwt", "jwk": key.bare_jwk})


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


class RotatingKeys:
    """Issuer keys in a state directory, rotated on a fixed schedule with an overlap.

    Time is cut into slots of ``period`` seconds; slot ``k``'s key signs from ``k * period``. It
    is created and published ``overlap`` seconds earlier, so a verifier that refreshes its JWKS
    at least once per ``overlap`` never meets an unknown ``kid``; the previous slot's key stays
    published for a whole period after it stops signing, so tokens it signed keep verifying.
    Slot numbers name the files, and a file is created by linking a finished temporary file
    into place, so worker processes racing to create the same key all end up with one.
    """

    def __init__(self, directory: Path, period: float, overlap: float, clock: Any) -> None:
        if not 0 < overlap < period:
            raise ValueError("rotation overlap must be shorter than the period")
        self.dir = directory
        self.period = period
        self.overlap = overlap
        self.clock = clock

    def slot(self, now: float | None = None) -> int:
        return int((self.clock.now() if now is None else now) // self.period)

    def _key(self, slot: int) -> SigningKey:
        path = self.dir / f"issuer-slot-{slot}.pem"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / f".issuer-slot-{slot}.{os.getpid()}.tmp"
            write_private_key(tmp, ec.generate_private_key(ec.SECP256R1()))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another worker made it first: use theirs
            finally:
                tmp.unlink(missing_ok=True)
        # kid = RFC 7638 thumbprint: a state directory lost and regenerated never reuses a kid
        # for a different key, so a verifier's cached JWKS cannot pick the wrong one.
        return SigningKey.from_private_key(load_private_key(path))

    def current(self) -> tuple[SigningKey, list[SigningKey]]:
        """(the signing key, every published key with the signing key first)."""
        now = self.clock.now()
        k = self.slot(now)
        signing = self._key(k)
        published = [signing, self._key(k - 1)]
        if self.slot(now + self.overlap) > k:
            published.append(self._key(k + 1))  # the next key, published before it signs
        for old in self.dir.glob("issuer-slot-*.pem"):
            n = int(old.stem.rsplit("-", 1)[1])
            if n < k - 1:
                old.unlink(missing_ok=True)
        return signing, published
