"""Per-request verification cost of each authentication method, in microseconds.

    .venv/bin/python -m benchmarks.authn_cost [--n 2000]

Proofs are made before timing starts (fresh WPT / DPoP proof / signature nonce per request, as
real callers send them); what is timed is ``authenticate()`` on one request, on one core, with
the caches warm the way a busy caller keeps them (the WIT and access token seen before, the
proof new). The pyjwt ES256 verify of one JWT is printed as the yardstick.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import jwt
from cryptography.hazmat.primitives.serialization import Encoding
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.authn.bearer import BearerAuthenticator, IssuerKeys, JwtVerifier
from gateway.authn.dpop import DpopAuthenticator
from gateway.authn.httpsig import HttpSigAuthenticator
from gateway.authn.jwks import KeySet, StaticKeySource
from gateway.authn.mtls import MtlsAuthenticator
from gateway.authn.replay import InMemoryReplayCache
from gateway.authn.wit import TrustDomainKeys, WitAuthenticator
from gateway.ca import CertificateAuthority
from gateway.clock import SystemClock
from gateway.keys import b64url, jwk_thumbprint
from gateway.model import Inbound
from tests.helpers.tokens import Key, make_dpop, make_wit, make_wpt

TARGET = "https://api.example.com/v1/orders"
SUB = "spiffe://example.org/ns/shop/sa/api"
ISS = "https://as.example.org"


def inbound(headers: dict[str, str], method: str = "GET", **kw) -> Inbound:
    return Inbound(method, URL(TARGET), CIMultiDictProxy(CIMultiDict(headers)), "127.0.0.1",
                   targets=frozenset({TARGET}), **kw)


def signed_request(wl: Key, wit: str, nonce: str) -> dict[str, str]:
    now = int(time.time())
    params = (f'("@method" "@request-target" "workload-identity-token");created={now};'
              f'expires={now + 60};nonce="{nonce}";tag="wimse-workload-to-workload";'
              f'wimse-aud="{TARGET}"')
    base = (f'"@method": GET\n"@request-target": /v1/orders\n"workload-identity-token": {wit}\n'
            f'"@signature-params": {params}')
    sig = jwt.get_algorithm_by_name("ES256").sign(base.encode(), wl.private)
    import base64

    return {"Workload-Identity-Token": wit, "Signature-Input": f"wimse={params}",
            "Signature": f"wimse=:{base64.b64encode(sig).decode()}:"}


async def time_calls(fn, inputs) -> list[float]:
    out = []
    for x in inputs:
        t = time.perf_counter_ns()
        await fn(x)
        out.append((time.perf_counter_ns() - t) / 1000)
    return out


async def main_async(n: int) -> dict[str, float]:
    clock = SystemClock()
    td, as_key, wl, dk = Key.es256("td"), Key.es256("as"), Key.es256(), Key.es256()
    trust = {"example.org": TrustDomainKeys(StaticKeySource(KeySet({"keys": [td.jwk]})),
                                            frozenset({"ES256"}), 5)}
    issuers = {ISS: IssuerKeys(ISS, StaticKeySource(KeySet({"keys": [as_key.jwk]})),
                               frozenset({"ES256"}), frozenset({"https://api.example.com"}), 5)}
    verifier = JwtVerifier(trust, issuers, frozenset({"spiffe://example.org/gw"}))
    replay = InMemoryReplayCache(clock, 10 * n)
    wit_a = WitAuthenticator(trust, replay, clock)
    results: dict[str, list[float]] = {}

    # mTLS: the TLS handshake verified the chain; this is the X509-SVID check per request
    ca = CertificateAuthority.create("example.org")
    leaf = ca.issue_svid(SUB)
    chain = (leaf.cert.public_bytes(Encoding.DER), ca.cert.public_bytes(Encoding.DER))
    m = MtlsAuthenticator({"example.org": [ca.cert]}, clock)

    async def mtls(_):
        m.verify_chain(chain)

    results["mtls (X509-SVID checks)"] = await time_calls(mtls, range(n))

    wit = make_wit(td, SUB, wl)
    reqs = [inbound(wh) for wh in ({"Workload-Identity-Token": wit,
                                    "Workload-Proof-Token": make_wpt(wl, wit, TARGET)}
                                   for _ in range(n))]
    results["wit+wpt (WIT cached)"] = await time_calls(wit_a.authenticate, reqs)

    token = as_key.sign({"iss": ISS, "sub": SUB, "aud": "https://api.example.com",
                         "exp": int(time.time()) + 600, "cnf": {"jkt": jwk_thumbprint(
                             dk.bare_jwk)}})
    dpop_a = DpopAuthenticator(verifier, replay, clock)
    reqs = [inbound({"Authorization": f"DPoP {token}", "DPoP": make_dpop(dk, "GET", TARGET,
                                                                         token)})
            for _ in range(n)]
    results["dpop (token cached)"] = await time_calls(dpop_a.authenticate, reqs)

    bearer_a = BearerAuthenticator(verifier, clock)
    svids = [td.sign({"sub": SUB, "aud": "spiffe://example.org/gw",
                      "exp": int(time.time()) + 600, "jti": str(i)}) for i in range(n)]
    reqs = [inbound({"Authorization": f"Bearer {t}"}) for t in svids]
    results["bearer JWT-SVID (new token)"] = await time_calls(bearer_a.authenticate, reqs)
    results["bearer JWT-SVID (same token)"] = await time_calls(
        bearer_a.authenticate, [inbound({"Authorization": f"Bearer {svids[0]}"})] * n)

    sig_a = HttpSigAuthenticator(trust, replay, clock, wit_a.verified_wit)
    reqs = [inbound(signed_request(wl, wit, b64url(i.to_bytes(8, "big"))))
            for i in range(n)]
    results["httpsig (WIT cached, no body)"] = await time_calls(sig_a.authenticate, reqs)

    pub = td.private.public_key()

    async def pyjwt_es256(t):
        jwt.decode(t, pub, algorithms=["ES256"], audience="spiffe://example.org/gw")

    results["yardstick: pyjwt ES256 decode"] = await time_calls(pyjwt_es256, svids)
    return {k: statistics.median(v) for k, v in results.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    med = asyncio.run(main_async(args.n))
    print(f"{'method':<34}{'median us/request':>18}")
    for k, v in med.items():
        print(f"{k:<34}{v:>18.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
