"""Each verifier against the same list of attacks and accidents; each gets its own reason."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.authn.bearer import BearerAuthenticator, IssuerKeys, JwtVerifier
from gateway.authn.dpop import DpopAuthenticator, DpopSettings
from gateway.authn.jwks import KeySet, StaticKeySource
from gateway.authn.replay import InMemoryReplayCache
from gateway.authn.wit import TrustDomainKeys, WitAuthenticator
from gateway.clock import FrozenClock
from gateway.errors import AuthnError
from gateway.model import AuthnMethod, Inbound
from tests.helpers.tokens import (
    Key,
    hs256_with_public_key,
    make_dpop,
    make_wit,
    make_wpt,
    unsigned,
)

NOW = float(int(time.time()))
TARGET = "https://api.example.com/v1/orders"
GW_AUD = "spiffe://example.org/gateway"
ISS = "https://as.example.org"
SUB = "spiffe://example.org/ns/shop/sa/api"

TD_KEY = Key.es256("td-1")
OTHER = Key.es256("td-1")  # same kid, different key: "wrong key"
AS_KEY = Key.es256("as-1")
WORKLOAD = Key.es256()
DPOP_KEY = Key.es256()


def setup() -> tuple[BearerAuthenticator, WitAuthenticator, DpopAuthenticator, FrozenClock]:
    clock = FrozenClock(NOW)
    trust = {"example.org": TrustDomainKeys(
        StaticKeySource(KeySet({"keys": [TD_KEY.jwk]})), frozenset({"ES256", "EdDSA"}), 5)}
    issuers = {ISS: IssuerKeys(ISS, StaticKeySource(KeySet({"keys": [AS_KEY.jwk]})),
                               frozenset({"ES256"}), frozenset({"https://api.example.com"}), 5)}
    verifier = JwtVerifier(trust, issuers, frozenset({GW_AUD}))
    replay = InMemoryReplayCache(clock)
    return (BearerAuthenticator(verifier, clock), WitAuthenticator(trust, replay, clock, 300),
            DpopAuthenticator(verifier, replay, clock, DpopSettings()), clock)


def inbound(headers: dict[str, str] | list[tuple[str, str]], method: str = "GET") -> Inbound:
    h = CIMultiDict(headers)
    return Inbound(method, URL(TARGET), CIMultiDictProxy(h), "127.0.0.1",
                   targets=frozenset({TARGET}))


def svid(**over) -> dict:
    return {"sub": SUB, "aud": [GW_AUD], "exp": NOW + 300, "iat": NOW, **over}


BEARER: list[tuple[str, Callable[[], str], str | None]] = [
    ("valid JWT-SVID", lambda: TD_KEY.sign(svid()), None),
    ("expired", lambda: TD_KEY.sign(svid(exp=NOW - 60)), "authn.expired"),
    ("not yet valid", lambda: TD_KEY.sign(svid(nbf=NOW + 120)), "authn.not_yet_valid"),
    ("wrong signature", lambda: TD_KEY.sign(svid())[:-6] + "AAAAAA", "authn.bad_signature"),
    ("wrong key", lambda: OTHER.sign(svid()), "authn.bad_signature"),
    ("unknown kid", lambda: TD_KEY.sign(svid(), kid="nope"), "authn.unknown_key"),
    ("alg none", lambda: unsigned(svid(), kid="td-1"), "authn.alg_not_allowed"),
    ("HS256 with the public key", lambda: hs256_with_public_key(svid(), TD_KEY),
     "authn.alg_not_allowed"),
    ("wrong audience", lambda: TD_KEY.sign(svid(aud="spiffe://example.org/other")),
     "authn.wrong_audience"),
    ("garbage base64", lambda: "eyJ!!!.eyJ.sig", "authn.malformed"),
    ("untrusted domain", lambda: TD_KEY.sign(svid(sub="spiffe://evil.org/x")), "authn.untrusted"),
    ("no exp", lambda: TD_KEY.sign({k: v for k, v in svid().items() if k != "exp"}),
     "authn.missing_claim"),
    ("bound token as bearer", lambda: TD_KEY.sign(svid(cnf={"jkt": "x"})),
     "authn.bound_token_as_bearer"),
    ("oversize", lambda: TD_KEY.sign(svid(pad="x" * 9000)), "authn.too_large"),
    ("OAuth issuer token", lambda: AS_KEY.sign({"iss": ISS, "sub": "client-7",
                                                "aud": "https://api.example.com",
                                                "exp": NOW + 60}), None),
]


@pytest.mark.parametrize(("case", "token", "reason"), BEARER, ids=[c[0] for c in BEARER])
async def test_bearer_table(case: str, token: Callable[[], str], reason: str | None) -> None:
    bearer, *_ = setup()
    req = inbound({"Authorization": f"Bearer {token()}"})
    assert bearer.present(req)
    if reason is None:
        caller = await bearer.authenticate(req)
        assert caller.method is AuthnMethod.BEARER and not caller.proof_of_possession
        assert caller.raw_token and caller.expires_at
        return
    with pytest.raises(AuthnError) as exc:
        await bearer.authenticate(req)
    assert exc.value.reason.code == reason, case
    assert exc.value.status == 401
    assert exc.value.headers["WWW-Authenticate"].startswith("Bearer")


async def test_bearer_duplicate_authorization_header() -> None:
    bearer, *_ = setup()
    tok = TD_KEY.sign(svid())
    with pytest.raises(AuthnError) as exc:
        await bearer.authenticate(inbound([("Authorization", f"Bearer {tok}"),
                                           ("Authorization", f"Bearer {tok}")]))
    assert exc.value.reason.code == "authn.duplicate_header"


def wit_headers(wit: str | None = None, wpt: str | None = None, **wpt_kw) -> dict[str, str]:
    wit = wit or make_wit(TD_KEY, SUB, WORKLOAD, now=NOW)
    return {"Workload-Identity-Token": wit,
            "Workload-Proof-Token": wpt or make_wpt(WORKLOAD, wit, TARGET, now=NOW, **wpt_kw)}


def _wit(**kw) -> str:
    return make_wit(TD_KEY, SUB, WORKLOAD, now=NOW, **kw)


WIT: list[tuple[str, Callable[[], dict[str, str]], str | None]] = [
    ("valid", lambda: wit_headers(), None),
    ("WIT expired", lambda: wit_headers(make_wit(TD_KEY, SUB, WORKLOAD, lifetime=-60, now=NOW)),
     "authn.expired"),
    ("WIT not yet valid", lambda: wit_headers(_wit(nbf=NOW + 600)), "authn.not_yet_valid"),
    ("WPT expired", lambda: wit_headers(wpt=make_wpt(WORKLOAD, (w := _wit()), TARGET,
                                                      lifetime=-60, now=NOW)) | {
        "Workload-Identity-Token": w}, "authn.expired"),
    ("WIT wrong signature", lambda: wit_headers(_wit()[:-6] + "AAAAAA"), "authn.bad_signature"),
    ("WIT wrong key", lambda: wit_headers(make_wit(OTHER, SUB, WORKLOAD, now=NOW)),
     "authn.bad_signature"),
    ("WPT wrong key", lambda: (lambda w: wit_headers(w, make_wpt(Key.es256(), w, TARGET,
                                                                 now=NOW)))(_wit()),
     "authn.bad_signature"),
    ("WIT unknown kid", lambda: wit_headers(make_wit(Key.es256("zz"), SUB, WORKLOAD, now=NOW)),
     "authn.unknown_key"),
    ("WIT wrong typ", lambda: (lambda w: wit_headers(w))(TD_KEY.sign(
        {"sub": SUB, "exp": NOW + 60, "cnf": {"jwk": {**WORKLOAD.bare_jwk, "alg": "ES256"}}},
        typ="JWT")), "authn.wrong_type"),
    ("WPT wrong typ", lambda: (lambda w: wit_headers(w, make_wpt(WORKLOAD, w, TARGET, now=NOW,
                                                                 typ="jwt")))(_wit()),
     "authn.wrong_type"),
    ("WIT alg none", lambda: wit_headers(unsigned({"sub": SUB, "exp": NOW + 60}, typ="wit+jwt")),
     "authn.alg_not_allowed"),
    ("WIT HS256 with public key", lambda: wit_headers(hs256_with_public_key(
        {"sub": SUB, "exp": NOW + 60}, TD_KEY, typ="wit+jwt")), "authn.alg_not_allowed"),
    ("WPT wrong audience", lambda: (lambda w: wit_headers(w, make_wpt(
        WORKLOAD, w, "https://elsewhere.example/v1/orders", now=NOW)))(_wit()),
     "authn.wrong_audience"),
    ("WPT for another WIT", lambda: (lambda w: wit_headers(w, make_wpt(
        WORKLOAD, _wit(jti="other"), TARGET, now=NOW)))(_wit()), "authn.token_hash_mismatch"),
    ("WIT garbage base64", lambda: wit_headers("a.b$.c"), "authn.malformed"),
    ("WIT oversize", lambda: wit_headers(_wit(pad="x" * 9000)), "authn.too_large"),
    ("WIT without cnf", lambda: wit_headers(TD_KEY.sign({"sub": SUB, "exp": NOW + 60},
                                                        typ="wit+jwt")), "authn.missing_claim"),
    ("WIT with private cnf key", lambda: wit_headers(TD_KEY.sign(
        {"sub": SUB, "exp": NOW + 60, "cnf": {"jwk": {**WORKLOAD.bare_jwk, "alg": "ES256",
                                                      "d": "AAAA"}}}, typ="wit+jwt")),
     "authn.missing_claim"),
    ("WPT lives too long", lambda: (lambda w: wit_headers(w, make_wpt(
        WORKLOAD, w, TARGET, lifetime=3600, now=NOW)))(_wit()), "authn.missing_claim"),
]


@pytest.mark.parametrize(("case", "headers", "reason"), WIT, ids=[c[0] for c in WIT])
async def test_wit_table(case: str, headers: Callable[[], dict[str, str]],
                         reason: str | None) -> None:
    _, wit, _, _ = setup()
    req = inbound(headers())
    if reason is None:
        caller = await wit.authenticate(req)
        assert caller.identity == SUB and caller.method is AuthnMethod.WIT
        assert caller.proof_of_possession
        return
    with pytest.raises(AuthnError) as exc:
        await wit.authenticate(req)
    assert exc.value.reason.code == reason, case
    assert exc.value.status == 400  # the WIMSE drafts ask for 400
    assert "WWW-Authenticate" not in exc.value.headers


async def test_wit_replay_and_cache() -> None:
    _, wit, _, _ = setup()
    headers = wit_headers()
    await wit.authenticate(inbound(headers))
    with pytest.raises(AuthnError) as exc:
        await wit.authenticate(inbound(headers))
    assert exc.value.reason.code == "authn.replayed"
    # a fresh WPT with the same (cached) WIT is fine
    w = headers["Workload-Identity-Token"]
    await wit.authenticate(inbound(wit_headers(w)))
    assert len(wit._cache) == 1


def at(**over) -> str:
    from gateway.keys import jwk_thumbprint

    claims = {"iss": ISS, "sub": SUB, "aud": "https://api.example.com", "exp": NOW + 300,
              "cnf": {"jkt": jwk_thumbprint(DPOP_KEY.bare_jwk)}, **over}
    return AS_KEY.sign(claims, typ="at+jwt")


def dpop_headers(token: str | None = None, proof: str | None = None, **kw) -> dict[str, str]:
    token = token or at()
    proof = proof or make_dpop(DPOP_KEY, kw.pop("htm", "GET"), kw.pop("htu", TARGET),
                               access_token=token, iat=kw.pop("iat", NOW), **kw)
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


DPOP: list[tuple[str, Callable[[], dict[str, str]], str | None]] = [
    ("valid", lambda: dpop_headers(), None),
    ("proof too old", lambda: dpop_headers(iat=NOW - 600), "authn.expired"),
    ("proof from the future", lambda: dpop_headers(iat=NOW + 600), "authn.not_yet_valid"),
    ("token expired", lambda: dpop_headers(at(exp=NOW - 60)), "authn.expired"),
    ("wrong signature", lambda: dpop_headers(proof=make_dpop(
        DPOP_KEY, "GET", TARGET, at(), iat=NOW)[:-6] + "AAAAAA"), "authn.bad_signature"),
    ("token bound to another key", lambda: (lambda k, t: dpop_headers(
        t, proof=make_dpop(k, "GET", TARGET, t, iat=NOW)))(Key.es256(), at()),
     "authn.key_binding_mismatch"),
    ("token unknown kid", lambda: dpop_headers(Key.es256("nope").sign(
        {"iss": ISS, "sub": SUB, "aud": "https://api.example.com", "exp": NOW + 60})),
     "authn.unknown_key"),
    ("wrong typ", lambda: dpop_headers(proof=make_dpop(DPOP_KEY, "GET", TARGET, at(), iat=NOW,
                                                       typ="jwt")), "authn.wrong_type"),
    ("alg none", lambda: dpop_headers(proof=unsigned(
        {"jti": "x", "htm": "GET", "htu": TARGET, "iat": NOW}, typ="dpop+jwt",
        jwk=DPOP_KEY.bare_jwk)), "authn.alg_not_allowed"),
    ("token HS256 with public key", lambda: dpop_headers(hs256_with_public_key(
        {"iss": ISS, "sub": SUB, "aud": "https://api.example.com", "exp": NOW + 60}, AS_KEY)),
     "authn.alg_not_allowed"),
    ("wrong htu", lambda: dpop_headers(htu="https://api.example.com/other"), "authn.wrong_target"),
    ("wrong htm", lambda: dpop_headers(htm="POST"), "authn.wrong_method"),
    ("ath for another token", lambda: (lambda t: dpop_headers(t, make_dpop(
        DPOP_KEY, "GET", TARGET, at(jti="other"), iat=NOW)))(at()), "authn.token_hash_mismatch"),
    ("private key in jwk", lambda: dpop_headers(proof=__import__("jwt").encode(
        {"jti": "x", "htm": "GET", "htu": TARGET, "iat": NOW}, DPOP_KEY.private, "ES256",
        headers={"typ": "dpop+jwt", "jwk": {**DPOP_KEY.bare_jwk, "d": "AAAA"}})),
     "authn.missing_claim"),
    ("garbage base64", lambda: dpop_headers(proof="###.###.###"), "authn.malformed"),
    ("wrong audience", lambda: dpop_headers(at(aud="https://other.example")),
     "authn.wrong_audience"),
]


@pytest.mark.parametrize(("case", "headers", "reason"), DPOP, ids=[c[0] for c in DPOP])
async def test_dpop_table(case: str, headers: Callable[[], dict[str, str]],
                          reason: str | None) -> None:
    _, _, dpop, _ = setup()
    req = inbound(headers())
    if reason is None:
        caller = await dpop.authenticate(req)
        assert caller.method is AuthnMethod.DPOP and caller.proof_of_possession
        assert caller.identity == SUB
        return
    with pytest.raises(AuthnError) as exc:
        await dpop.authenticate(req)
    assert exc.value.reason.code == reason, case
    assert exc.value.status == 401
    assert exc.value.headers["WWW-Authenticate"].startswith("DPoP algs=")


async def test_dpop_replay_and_nonce() -> None:
    _, _, dpop, clock = setup()
    h = dpop_headers()
    await dpop.authenticate(inbound(h))
    with pytest.raises(AuthnError) as exc:
        await dpop.authenticate(inbound(h))
    assert exc.value.reason.code == "authn.replayed"
    dpop.settings = DpopSettings(require_nonce=True)
    with pytest.raises(AuthnError) as exc:
        await dpop.authenticate(inbound(dpop_headers()))
    assert exc.value.reason.code == "authn.use_dpop_nonce"
    assert 'error="use_dpop_nonce"' in exc.value.headers["WWW-Authenticate"]
    nonce = exc.value.headers["DPoP-Nonce"]
    await dpop.authenticate(inbound(dpop_headers(nonce=nonce)))
    clock.advance(400)  # nonces age out
    with pytest.raises(AuthnError):
        await dpop.authenticate(inbound(dpop_headers(nonce=nonce, iat=clock.now())))


def test_replay_cache_is_bounded_and_expires() -> None:
    clock = FrozenClock(NOW)
    rc = InMemoryReplayCache(clock, max_entries=1000)
    for i in range(5000):
        assert rc.check_and_store_now("s", str(i), NOW + 10 + i)
    assert len(rc) == 1000
    assert not rc.check_and_store_now("s", "4999", NOW + 10)
    clock.advance(10_000)
    assert rc.check_and_store_now("s", "4999", clock.now() + 1)
    assert len(rc) == 1


async def test_ed25519_fully_specified_alg_name() -> None:
    """RFC 9864 `Ed25519` (as the npm dpop package emits) verifies like `EdDSA`."""
    import json

    from gateway.keys import b64url, jwk_thumbprint
    from tests.helpers.tokens import sha

    _, _, dpop, _ = setup()
    k = Key.ed25519()
    token = at(cnf={"jkt": jwk_thumbprint(k.bare_jwk)})
    enc = lambda o: b64url(json.dumps(o).encode())  # noqa: E731
    signing_input = (enc({"typ": "dpop+jwt", "alg": "Ed25519", "jwk": k.bare_jwk}) + "." +
                     enc({"jti": "e1", "htm": "GET", "htu": TARGET, "iat": NOW,
                          "ath": sha(token)}))
    proof = signing_input + "." + b64url(k.private.sign(signing_input.encode()))
    dpop.settings = DpopSettings(algorithms=frozenset({"Ed25519", "ES256"}))
    caller = await dpop.authenticate(inbound({"Authorization": f"DPoP {token}", "DPoP": proof}))
    assert caller.key_thumbprint == jwk_thumbprint(k.bare_jwk)


# ---- WIMSE HTTP message signatures -------------------------------------------------------------

def signed(wit: str, key: Key, *, nonce: str | None = None, created: float | None = None,
           lifetime: int = 60, aud: str = TARGET, extra_params: str = "",
           components: str = '"@method" "@request-target" "workload-identity-token"',
           tag: str = "wimse-workload-to-workload", method: str = "GET",
           digest: str = "") -> dict[str, str]:
    """A WIMSE request signature made by hand (the npm package makes them in the interop
    tests); the base follows RFC 9421 2.5."""
    import base64
    import secrets

    import jwt as pyjwt

    created = int(created if created is not None else NOW)
    nonce = nonce or secrets.token_hex(8)
    params = (f"({components});created={created};expires={created + lifetime};"
              f'nonce="{nonce}";tag="{tag}";wimse-aud="{aud}"{extra_params}')
    values = {'"@method"': method, '"@request-target"': "/v1/orders",
              '"workload-identity-token"': wit, '"content-digest"': digest}
    lines = [f"{c}: {values[c]}" for c in components.split(" ")]
    base = "\n".join([*lines, f'"@signature-params": {params}'])
    sig = pyjwt.get_algorithm_by_name(key.alg).sign(base.encode(), key.private)
    return {"Workload-Identity-Token": wit, "Signature-Input": f"wimse={params}",
            "Signature": f"wimse=:{base64.b64encode(sig).decode()}:"}


def sig_authn():
    from gateway.authn.httpsig import HttpSigAuthenticator

    clock = FrozenClock(NOW)
    trust = {"example.org": TrustDomainKeys(
        StaticKeySource(KeySet({"keys": [TD_KEY.jwk]})), frozenset({"ES256"}), 5)}
    return HttpSigAuthenticator(trust, InMemoryReplayCache(clock), clock)


HTTPSIG: list[tuple[str, Callable[[], dict[str, str]], str | None]] = [
    ("valid", lambda: signed(_wit(), WORKLOAD), None),
    ("expired", lambda: signed(_wit(), WORKLOAD, created=NOW - 600), "authn.expired"),
    ("created in the future", lambda: signed(_wit(), WORKLOAD, created=NOW + 600),
     "authn.not_yet_valid"),
    ("wrong signature", lambda: {**signed(_wit(), WORKLOAD), "Signature":
                                 "wimse=:" + "A" * 86 + "==:"}, "authn.bad_signature"),
    ("wrong key", lambda: signed(_wit(), Key.es256()), "authn.bad_signature"),
    ("WIT unknown kid", lambda: signed(make_wit(Key.es256("zz"), SUB, WORKLOAD, now=NOW),
                                       WORKLOAD), "authn.unknown_key"),
    ("WIT alg none", lambda: signed(unsigned({"sub": SUB, "exp": NOW + 60}, typ="wit+jwt"),
                                    WORKLOAD), "authn.alg_not_allowed"),
    ("keyid chosen by the message", lambda: signed(_wit(), WORKLOAD,
                                                   extra_params=';keyid="mine"'),
     "authn.alg_not_allowed"),
    ("wrong tag", lambda: signed(_wit(), WORKLOAD, tag="other"), "authn.missing"),
    ("WIT not covered", lambda: signed(_wit(), WORKLOAD,
                                       components='"@method" "@request-target"'),
     "authn.missing_claim"),
    ("wrong audience", lambda: signed(_wit(), WORKLOAD, aud="https://elsewhere.example/"),
     "authn.wrong_audience"),
    ("method changed", lambda: signed(_wit(), WORKLOAD, method="POST"), "authn.bad_signature"),
    ("lives too long", lambda: signed(_wit(), WORKLOAD, lifetime=3600), "authn.missing_claim"),
    ("garbage structured field", lambda: {**signed(_wit(), WORKLOAD),
                                          "Signature-Input": "wimse=(((("},
     "authn.malformed"),
]


@pytest.mark.parametrize(("case", "headers", "reason"), HTTPSIG, ids=[c[0] for c in HTTPSIG])
async def test_httpsig_table(case: str, headers: Callable[[], dict[str, str]],
                             reason: str | None) -> None:
    authn = sig_authn()
    req = inbound(headers())
    assert authn.present(req)
    if reason is None:
        caller = await authn.authenticate(req)
        assert caller.method is AuthnMethod.HTTPSIG and caller.identity == SUB
        with pytest.raises(AuthnError) as exc:  # the same nonce again
            await authn.authenticate(req)
        assert exc.value.reason.code == "authn.replayed"
        return
    with pytest.raises(AuthnError) as exc:
        await authn.authenticate(req)
    assert exc.value.reason.code == reason, case
    assert exc.value.status == 400


async def test_httpsig_body_needs_a_matching_signed_digest() -> None:
    import base64
    import hashlib

    body = b'{"order": 1}'
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    wit = _wit()

    def req(headers: dict[str, str], data: bytes) -> Inbound:
        async def read_body() -> bytes:
            return data
        return Inbound("GET", URL(TARGET), CIMultiDictProxy(CIMultiDict(headers)), "127.0.0.1",
                       targets=frozenset({TARGET}), has_body=True, read_body=read_body)

    comps = '"@method" "@request-target" "workload-identity-token" "content-digest"'
    covered = {**signed(wit, WORKLOAD, components=comps, digest=digest), "Content-Digest": digest}
    caller = await sig_authn().authenticate(req(covered, body))
    assert caller.identity == SUB
    with pytest.raises(AuthnError) as exc:  # tampered body
        await sig_authn().authenticate(req(covered, body + b" "))
    assert exc.value.reason.code == "authn.digest_mismatch"
    with pytest.raises(AuthnError) as exc:  # a body, but no digest under the signature
        await sig_authn().authenticate(req(signed(wit, WORKLOAD), body))
    assert exc.value.reason.code == "authn.missing_claim"
    uncovered = {**signed(wit, WORKLOAD), "Content-Digest": digest}
    with pytest.raises(AuthnError) as exc:  # a digest header the signature does not cover
        await sig_authn().authenticate(req(uncovered, body))
    assert exc.value.reason.code == "authn.missing_claim"


def _txn(**over) -> dict:
    c = {"iss": ISS, "aud": "example.org", "txn": "t-1", "sub": SUB, "scope": "orders.read",
         "iat": int(NOW), "exp": int(NOW) + 60, "tctx": {"entry": "front"}}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


TXN_CASES = [
    ("ok", lambda: AS_KEY.sign(_txn(), typ="txntoken+jwt"), None),
    ("wrong typ", lambda: AS_KEY.sign(_txn(), typ="JWT"), "authn.wrong_type"),
    ("untrusted issuer", lambda: AS_KEY.sign(_txn(iss="https://evil.example"),
                                             typ="txntoken+jwt"), "authn.untrusted"),
    ("alg none", lambda: unsigned(_txn(), typ="txntoken+jwt"), "authn.alg_not_allowed"),
    ("hs256 with the public key", lambda: hs256_with_public_key(_txn(), AS_KEY,
                                                                typ="txntoken+jwt"),
     "authn.alg_not_allowed"),
    ("other key, same kid", lambda: Key.es256("as-1").sign(_txn(), typ="txntoken+jwt"),
     "authn.bad_signature"),
    ("unknown kid", lambda: Key.es256("as-9").sign(_txn(), typ="txntoken+jwt"),
     "authn.unknown_key"),
    ("expired", lambda: AS_KEY.sign(_txn(exp=int(NOW) - 60), typ="txntoken+jwt"),
     "authn.expired"),
    ("no exp", lambda: AS_KEY.sign(_txn(exp=None), typ="txntoken+jwt"), "authn.expired"),
    ("other trust domain", lambda: AS_KEY.sign(_txn(aud="elsewhere.org"), typ="txntoken+jwt"),
     "authn.wrong_audience"),
    ("no txn id", lambda: AS_KEY.sign(_txn(txn=None), typ="txntoken+jwt"),
     "authn.missing_claim"),
    ("garbage", lambda: "not.a.token", "authn.malformed"),
]


@pytest.mark.parametrize(("case", "token", "reason"), TXN_CASES, ids=[c[0] for c in TXN_CASES])
async def test_txn_token_table(case: str, token: Callable[[], str], reason: str | None) -> None:
    from gateway.authn.txn import TxnTokenVerifier

    v = TxnTokenVerifier({ISS: StaticKeySource(KeySet({"keys": [AS_KEY.jwk]}))},
                         frozenset({"example.org"}))
    raw = token()
    if reason is None:
        assert (await v.verify(inbound({"Txn-Token": raw}), NOW))["txn"] == "t-1"
        return
    with pytest.raises(AuthnError) as exc:
        await v.verify(inbound({"Txn-Token": raw}), NOW)
    assert exc.value.reason.code == reason
    assert raw not in exc.value.detail
    with pytest.raises(AuthnError) as exc:  # two Txn-Tokens are never merged or chosen from
        await v.verify(inbound([("Txn-Token", raw), ("Txn-Token", raw)]), NOW)
    assert exc.value.reason.code == "authn.duplicate_header"
