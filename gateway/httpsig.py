"""RFC 9421 signature bases and RFC 9530 digests, shared by the verifier and the signer.

The ``http-message-signatures`` package parses ``Signature-Input`` / ``Signature`` and builds
signature bases; only those parts are used, because the WIMSE profile takes the key and the
algorithm from the WIT (``keyid`` and ``alg`` never appear) and the signature is a JWS
signature over the base (RFC 9421 3.3.7).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from http_message_signatures import HTTPMessageVerifier, algorithms

TAG = "wimse-workload-to-workload"
ALWAYS = ("@method", "@request-target", "workload-identity-token")
WHEN_PRESENT = ("content-type", "content-digest", "authorization", "txn-token")
REQUIRED_PARAMS = ("created", "expires", "nonce", "tag", "wimse-aud")


@dataclass
class HeaderLines:
    pairs: list[tuple[str, str]]

    def items(self) -> list[tuple[str, str]]:
        return self.pairs

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(k for k, _ in self.pairs)

    def __contains__(self, name: object) -> bool:
        return any(k.lower() == str(name).lower() for k, _ in self.pairs)


@dataclass
class Message:
    """What the library's component resolver reads: method, absolute URL, header lines."""

    method: str
    url: str
    headers: HeaderLines


class SignatureBase(HTTPMessageVerifier):
    """Only the library's parsing and signature-base construction are used."""

    def __init__(self) -> None:
        super().__init__(signature_algorithm=algorithms.ED25519, key_resolver=None)

    def parse(self, value: str) -> Any:
        return self._parse_signature_dictionary(value)

    def base(self, message: Message, covered: list[Any], params: dict[str, Any]) -> str:
        sig_base, _, _ = self._build_signature_base(
            message, covered_component_ids=covered, signature_params=params)
        return sig_base

    def base_and_input(self, message: Message, covered: list[Any], params: dict[str, Any]
                       ) -> tuple[str, str]:
        """The signature base and the serialized ``Signature-Input`` member for it."""
        sig_base, params_node, _ = self._build_signature_base(
            message, covered_component_ids=covered, signature_params=params)
        return sig_base, str(params_node)


BASE = SignatureBase()


def content_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` with SHA-256."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
