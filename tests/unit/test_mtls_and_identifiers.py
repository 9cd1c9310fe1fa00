"""X509-SVID verification table and workload identifier vectors (no sockets)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.authn.identifier import parse_workload_id
from gateway.authn.mtls import MtlsAuthenticator
from gateway.ca import CertificateAuthority
from gateway.clock import FrozenClock
from gateway.errors import AuthnError
from gateway.model import AuthnMethod
from tests.conftest import SHARED

TD = "example.org"
ID = "spiffe://example.org/ns/shop/sa/api"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create(TD)


def der(issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


def authn(ca: CertificateAuthority, **extra: CertificateAuthority) -> MtlsAuthenticator:
    bundles = {TD: [ca.cert], **{k: [v.cert] for k, v in extra.items()}}
    return MtlsAuthenticator(bundles, FrozenClock(dt.datetime.now(dt.UTC).timestamp()))


def test_valid_svid(ca: CertificateAuthority) -> None:
    leaf = ca.issue_svid(ID)
    caller = authn(ca).verify_chain((der(leaf), ca.cert.public_bytes(Encoding.DER)))
    assert caller.identity == ID and caller.trust_domain == TD
    assert caller.method is AuthnMethod.MTLS and caller.proof_of_possession
    assert caller.expires_at == leaf.cert.not_valid_after_utc.timestamp()
    # leaf alone (no chain from the TLS layer): issuer checked against the bundle directly
    assert authn(ca).verify_chain((der(leaf),)).identity == ID


def test_svid_through_intermediate(ca: CertificateAuthority) -> None:
    inter = ca.intermediate(TD)
    leaf = inter.issue_svid(ID)
    chain = (der(leaf), inter.cert.public_bytes(Encoding.DER), ca.cert.public_bytes(Encoding.DER))
    assert authn(ca).verify_chain(chain).identity == ID


NOW = dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    ("case", "kwargs", "reason"),
    [
        ("expired", {"not_before": NOW - dt.timedelta(hours=2),
                     "lifetime": dt.timedelta(hours=1)}, "authn.expired"),
        ("not yet valid", {"not_before": NOW + dt.timedelta(hours=1)}, "authn.not_yet_valid"),
        ("two URI SANs", {"spiffe_ids": [ID, ID + "2"]}, "authn.invalid_identity"),
        ("no URI SAN", {"spiffe_ids": []}, "authn.invalid_identity"),
        ("not spiffe", {"spiffe_ids": "https://example.org/x"}, "authn.invalid_identity"),
        ("wimse scheme", {"spiffe_ids": "wimse://example.org/x"}, "authn.invalid_identity"),
        ("no path", {"spiffe_ids": "spiffe://example.org"}, "authn.invalid_identity"),
        ("dot segment", {"spiffe_ids": "spiffe://example.org/a/../b"}, "authn.invalid_identity"),
        ("leaf is a CA", {"ca": True}, "authn.invalid_certificate"),
        ("no digitalSignature", {"digital_signature": False}, "authn.invalid_certificate"),
        ("keyCertSign", {"key_cert_sign": True}, "authn.invalid_certificate"),
        ("unknown trust domain", {"spiffe_ids": "spiffe://other.org/x"}, "authn.untrusted"),
    ],
)
def test_refusals(ca: CertificateAuthority, case: str, kwargs: dict, reason: str) -> None:
    ids = kwargs.pop("spiffe_ids", ID)
    leaf = ca.issue_svid(ids, **kwargs)
    with pytest.raises(AuthnError) as exc:
        authn(ca).verify_chain((der(leaf), ca.cert.public_bytes(Encoding.DER)))
    assert exc.value.reason.code == reason, case


def test_cross_domain_anchor_refused(ca: CertificateAuthority) -> None:
    """partner.org's CA is trusted for partner.org only; it cannot vouch for example.org."""
    partner = CertificateAuthority.create("partner.org")
    leaf = partner.issue_svid(ID)
    a = authn(ca, **{"partner.org": partner})
    with pytest.raises(AuthnError) as exc:
        a.verify_chain((der(leaf), partner.cert.public_bytes(Encoding.DER)))
    assert exc.value.reason.code == "authn.untrusted"
    with pytest.raises(AuthnError):
        a.verify_chain((der(leaf),))


def test_garbage_der() -> None:
    a = MtlsAuthenticator({}, FrozenClock())
    with pytest.raises(AuthnError) as exc:
        a.verify_chain((b"\x30\x03garbage",))
    assert exc.value.reason.code == "authn.invalid_certificate"


def _identifier_cases() -> list[tuple[str, bool | None, str]]:
    data = json.loads((SHARED / "vectors" / "workload-identifier-cases.json").read_text())
    cases = data["spiffe_id_syntax"] + data["wimse_identifier_syntax"]
    return [(c["id"], c["valid"], c["why"]) for c in cases]


@pytest.mark.parametrize(("value", "valid", "why"), _identifier_cases())
def test_identifier_vectors(value: str, valid: bool | None, why: str) -> None:
    if valid is None:
        # the spec disagrees with itself (upper-case scheme); we refuse non-canonical input
        with pytest.raises(ValueError):
            parse_workload_id(value)
        return
    if valid:
        wid = parse_workload_id(value)
        assert wid.uri == value
    else:
        with pytest.raises(ValueError):
            parse_workload_id(value)


def test_identifier_length_cap() -> None:
    with pytest.raises(ValueError, match="2048"):
        parse_workload_id("spiffe://example.org/" + "a" * 2048)
    assert parse_workload_id("spiffe://example.org/" + "a" * 2000)
