"""RFC 9421 appendix B.2 and the WIMSE HTTP-signature example, through our use of the
http-message-signatures package (signature bases) and our JOSE layer (signatures)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from http_message_signatures import HTTPMessageVerifier, algorithms
from http_sf.compat import Item

from gateway.authn.httpsig import verify_content_digest, verify_request_signature
from gateway.authn.jose import Jws, key_from_jwk, verify_signature
from gateway.errors import AuthnError
from gateway.httpsig import BASE as _BASE
from gateway.httpsig import HeaderLines as _Headers
from gateway.httpsig import Message as _Message
from tests.conftest import SHARED

V = SHARED / "vectors"
CASES = json.loads((V / "rfc9421-test-cases.json").read_text())
KEYS = json.loads((V / "rfc9421-keys.json").read_text())["keys"]


def _request_message() -> _Message:
    raw = CASES["test_request"]["raw_crlf"]
    head = raw.split("\r\n\r\n", 1)[0].split("\r\n")
    pairs = [tuple(x.strip() for x in line.split(":", 1)) for line in head[1:]]
    return _Message(head[0].split(" ")[0], CASES["test_request"]["target_uri"], _Headers(pairs))


REQUEST_CASES = [c for c in CASES["cases"] if c["target_message"] == "test-request"]


@pytest.mark.parametrize("case", REQUEST_CASES, ids=lambda c: c["section"])
def test_rfc9421_signature_bases(case: dict) -> None:
    member = case["signature_input_member"]
    parsed = _BASE.parse(member)
    sig_input = parsed[case["label"]]
    base = _BASE.base(_request_message(), list(sig_input), sig_input.params)
    assert base == case["signature_base"]


@pytest.mark.parametrize(("section", "key", "jws_alg"), [("B.2.6", "test-key-ed25519", "EdDSA")])
def test_rfc9421_signatures_verify_with_jws_algorithms(section: str, key: str,
                                                       jws_alg: str) -> None:
    case = next(c for c in CASES["cases"] if c["section"] == section)
    sig = _BASE.parse(case["signature_member"])[case["label"]]
    assert isinstance(sig, Item)
    pub = load_pem_public_key(KEYS[key]["pem_public"].encode())
    jws = Jws("", {}, {}, case["signature_base"].encode(), sig.value)
    assert verify_signature(jws, jws_alg, pub)
    tampered = Jws("", {}, {}, case["signature_base"].encode() + b" ", sig.value)
    assert not verify_signature(tampered, jws_alg, pub)


def test_rfc9421_ecdsa_b24_with_printed_base() -> None:
    """B.2.4 (ecdsa-p256-sha256 = raw r||s, the same encoding as JWS ES256)."""
    case = next(c for c in CASES["cases"] if c["section"] == "B.2.4")
    sig = _BASE.parse(case["signature_member"])[case["label"]]
    pub = load_pem_public_key(KEYS["test-key-ecc-p256"]["pem_public"].encode())
    assert verify_signature(Jws("", {}, {}, case["signature_base"].encode(), sig.value),
                            "ES256", pub)


def test_rfc9530_digests() -> None:
    d = json.loads((V / "rfc9530-digests.json").read_text())
    body = CASES["test_request"]["body"].encode()
    header = dict(line.split(": ", 1) for line in CASES["test_request"]["raw_crlf"]
                  .split("\r\n\r\n")[0].split("\r\n")[1:])["Content-Digest"]
    verify_content_digest(header, body)
    with pytest.raises(AuthnError) as exc:
        verify_content_digest(header, body + b" ")
    assert exc.value.reason.code == "authn.digest_mismatch"
    # the B.2 test-response's printed digest is wrong (erratum): we must refuse it
    resp = CASES["test_response"]
    bad = resp["raw_crlf"].split("Content-Digest: ")[1].split("\r\n")[0]
    with pytest.raises(AuthnError):
        verify_content_digest(bad, resp["body"].encode())
    verify_content_digest(resp["correct_content_digest_sha512"].split(": ", 1)[-1],
                          resp["body"].encode())
    assert d  # the file is there and parses


WIMSE = json.loads((V / "wimse-httpsig.json").read_text())


def _wimse_request() -> tuple[str, str, list[tuple[str, str]]]:
    req = WIMSE["request"]
    method, target, _ = req["request_line"].split(" ")
    url = f"{req['scheme']}://{req['headers']['Host']}{target}"
    return method, url, list(req["headers"].items())


def test_wimse_request_signature_vector() -> None:
    method, url, pairs = _wimse_request()
    jwk = {k: v for k, v in WIMSE["caller_private_jwk"].items() if k != "d"}
    key = key_from_jwk(jwk, "EdDSA")
    sig_input = _BASE.parse(dict(pairs)["Signature-Input"])["wimse"]
    base = _BASE.base(_Message(method, url, _Headers(pairs)), list(sig_input), sig_input.params)
    assert base == WIMSE["request"]["expected_signature_base"]
    created = sig_input.params["created"]
    targets = frozenset({"https://svcb.example.com/gimme-ice-cream"})
    v = verify_request_signature(method, url, pairs, key, "EdDSA", targets, created + 10)
    assert v.label == "wimse" and v.params["nonce"] == "abcd1111"
    assert v.params["wimse-sign-response"] is True
    with pytest.raises(AuthnError) as exc:
        verify_request_signature(method, url, pairs, key, "EdDSA",
                                 frozenset({"https://other.example.com/gimme-ice-cream"}),
                                 created + 10)
    assert exc.value.reason.code == "authn.wrong_audience"
    with pytest.raises(AuthnError) as exc:
        verify_request_signature("POST", url, pairs, key, "EdDSA", targets, created + 10)
    assert exc.value.reason.code == "authn.bad_signature"
    with pytest.raises(AuthnError) as exc:
        verify_request_signature(method, url, pairs, key, "EdDSA", targets, created + 3600)
    assert exc.value.reason.code == "authn.expired"


def test_wimse_response_digest_vector() -> None:
    resp = WIMSE["response"]
    verify_content_digest(resp["headers"]["Content-Digest"], resp["body"].encode())
    digest = base64.b64encode(hashlib.sha256(resp["body"].encode()).digest()).decode()
    assert resp["headers"]["Content-Digest"] == f"sha-256=:{digest}:"


def test_library_itself_agrees_on_the_b26_signature() -> None:
    """The package's own verifier (with its keyid requirement) accepts the same B.2.6 case."""
    case = next(c for c in CASES["cases"] if c["section"] == "B.2.6")
    pub = load_pem_public_key(KEYS["test-key-ed25519"]["pem_public"].encode())

    class Resolver:
        def resolve_public_key(self, key_id: str):
            assert key_id == "test-key-ed25519"
            return pub

    msg = _request_message()
    msg.headers.pairs.append(("Signature-Input", case["signature_input_member"]))
    msg.headers.pairs.append(("Signature", case["signature_member"]))
    v = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=Resolver())
    v.validate_created_and_expires = lambda *a, **k: None  # vectors are from 2021
    assert v.verify(msg, max_age=None)
