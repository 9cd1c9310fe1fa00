"""Published test vectors: RFC 7638 thumbprints, RFC 9449 DPoP proofs, WIMSE WIT + WPT."""

from __future__ import annotations

import json

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.authn.dpop import DpopSettings, verify_proof
from gateway.authn.jwks import KeySet, StaticKeySource
from gateway.authn.replay import InMemoryReplayCache
from gateway.authn.request import normalize_uri
from gateway.authn.wit import TrustDomainKeys, WitAuthenticator, verify_wit, verify_wpt
from gateway.clock import FrozenClock
from gateway.errors import AuthnError
from gateway.keys import jwk_thumbprint, sha256_b64url
from gateway.model import Inbound
from tests.conftest import SHARED

V = SHARED / "vectors"


def load(name: str) -> dict:
    return json.loads((V / name).read_text())


@pytest.mark.parametrize("case", load("rfc7638-thumbprints.json")["vectors"],
                         ids=lambda c: c["name"])
def test_rfc7638_thumbprints(case: dict) -> None:
    assert jwk_thumbprint(case["jwk"]) == case["sha256_thumbprint_b64url"]


DPOP = load("rfc9449-dpop.json")


@pytest.mark.parametrize("i", range(len(DPOP["proofs"])))
def test_rfc9449_proofs_verify(i: int) -> None:
    p = DPOP["proofs"][i]
    req = p["request"]
    token = None
    if "authorization" in req:
        token = req["authorization"].split(" ", 1)[1]
    now = p["payload"]["iat"] + 1
    v = verify_proof(p["jwt"], req["method"], frozenset({normalize_uri(req["target_uri"])}),
                     now, DpopSettings(), access_token=token)
    assert v.jkt == DPOP["expected_jkt"]
    if token:
        assert sha256_b64url(token) == DPOP["expected_ath"]


def test_rfc9449_proof_refused_for_other_method_uri_time_and_token() -> None:
    p = DPOP["proofs"][2]
    target = frozenset({normalize_uri(p["request"]["target_uri"])})
    iat = p["payload"]["iat"]
    tok = DPOP["access_token"]
    cases = [
        ("POST", target, iat, tok, "authn.wrong_method"),
        ("GET", frozenset({"https://resource.example.org/other"}), iat, tok, "authn.wrong_target"),
        ("GET", target, iat + 3600, tok, "authn.expired"),
        ("GET", target, iat - 3600, tok, "authn.not_yet_valid"),
        ("GET", target, iat, tok + "x", "authn.token_hash_mismatch"),
    ]
    for method, targets, now, token, reason in cases:
        with pytest.raises(AuthnError) as exc:
            verify_proof(p["jwt"], method, targets, now, DpopSettings(), access_token=token)
        assert exc.value.reason.code == reason
        assert exc.value.headers["WWW-Authenticate"].startswith("DPoP algs=")


def test_htu_normalisation() -> None:
    assert normalize_uri("HTTPS://Server.Example.COM:443/token?x#y") == (
        "https://server.example.com/token")
    assert normalize_uri("http://a.example:80") == "http://a.example/"
    assert normalize_uri("http://a.example:8080/p") == "http://a.example:8080/p"


WIMSE = load("wimse-wit-wpt.json")


def _wimse_trust() -> dict[str, TrustDomainKeys]:
    keys = KeySet({"keys": [WIMSE["identity_server_public_jwk"]]})
    return {"example.com": TrustDomainKeys(StaticKeySource(keys), frozenset({"ES256"}), 30)}


def _inbound(headers: dict[str, str] | None = None) -> Inbound:
    req = WIMSE["request"]
    h = CIMultiDict(req["headers"] if headers is None else headers)
    return Inbound(method=req["method"], target=URL(req["target_uri"]),
                   headers=CIMultiDictProxy(h), peer_address="127.0.0.1",
                   targets=frozenset({normalize_uri(req["target_uri"])}))


async def test_wimse_wit_and_wpt_vectors() -> None:
    wit_raw, wpt_raw = WIMSE["wit"]["compact"], WIMSE["wpt"]["compact"]
    now = WIMSE["wpt"]["claims"]["exp"] - 10
    wit = await verify_wit(wit_raw, _wimse_trust().get, now)
    assert wit.identity == WIMSE["expected"]["workload_identifier"]
    assert wit.cnf_alg == WIMSE["expected"]["wpt_alg_must_equal_cnf_jwk_alg"]
    assert sha256_b64url(wit_raw) == WIMSE["expected"]["wth"]
    claims, _ = verify_wpt(wpt_raw, wit, wit_raw, _inbound(), now, 3600, 0)
    assert claims["ath"] == WIMSE["expected"]["ath"]

    clock = FrozenClock(now)
    authn = WitAuthenticator(_wimse_trust(), InMemoryReplayCache(clock), clock, 3600)
    caller = await authn.authenticate(_inbound())
    assert caller.identity == "wimse://example.com/specific-workload"
    # the workload key's thumbprint, as rfc7638-thumbprints.json computes it
    assert caller.proof_of_possession
    assert caller.key_thumbprint == "sWptYalQwqq7mvswEtvcpHYbrI-lqgVH7SdfkHinUzI"
    with pytest.raises(AuthnError) as exc:  # the same WPT again
        await authn.authenticate(_inbound())
    assert exc.value.reason.code == "authn.replayed" and exc.value.status == 400


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: h.update({"Authorization": "Bearer other-token"}), "authn.token_hash_mismatch"),
        (lambda h: h.pop("Authorization"), "authn.token_hash_mismatch"),
        (lambda h: h.update({"Workload-Identity-Token":
                             h["Workload-Identity-Token"][:-3] + "AAA"}), "authn.bad_signature"),
        (lambda h: h.update({"Workload-Proof-Token": h["Workload-Proof-Token"][:-3] + "AAA"}),
         "authn.bad_signature"),
        (lambda h: h.update({"Txn-Token": "x"}), "authn.token_hash_mismatch"),
        (lambda h: h.update({"Workload-Proof-Token": "not.a.jwt!"}), "authn.malformed"),
    ],
)
async def test_wimse_negative_mutations(mutate, reason: str) -> None:
    headers = dict(WIMSE["request"]["headers"])
    mutate(headers)
    clock = FrozenClock(WIMSE["wpt"]["claims"]["exp"] - 10)
    authn = WitAuthenticator(_wimse_trust(), InMemoryReplayCache(clock), clock, 3600)
    with pytest.raises(AuthnError) as exc:
        await authn.authenticate(_inbound(headers))
    assert exc.value.reason.code == reason
    assert exc.value.status == 400


async def test_wimse_wpt_for_another_audience_and_after_expiry() -> None:
    now = WIMSE["wpt"]["claims"]["exp"] - 10
    clock = FrozenClock(now)
    authn = WitAuthenticator(_wimse_trust(), InMemoryReplayCache(clock), clock, 3600)
    inbound = _inbound()
    other = Inbound(inbound.method, inbound.target, inbound.headers, "127.0.0.1",
                    targets=frozenset({"https://workload.example.com/other"}))
    with pytest.raises(AuthnError) as exc:
        await authn.authenticate(other)
    assert exc.value.reason.code == "authn.wrong_audience"
    clock.advance(45)  # past exp plus the trust domain's 30 s skew
    with pytest.raises(AuthnError) as exc:
        await authn.authenticate(inbound)
    assert exc.value.reason.code == "authn.expired"
