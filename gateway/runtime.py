"""Everything built from one config + policy version; replaced as a whole on reload.

Building a runtime does all the work a request should not do: it reads files, compiles rules,
builds TLS contexts and picks implementations from explicit registries. If any of that fails,
the previous runtime keeps serving.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.authn.base import Authenticator, AuthenticatorChain
from gateway.authn.bearer import BearerAuthenticator, IssuerKeys, JwtVerifier
from gateway.authn.dpop import DpopAuthenticator, DpopSettings
from gateway.authn.httpsig import HttpSigAuthenticator
from gateway.authn.jwks import KeySet, KeySource, RemoteKeySource, StaticKeySource
from gateway.authn.mtls import MtlsAuthenticator, XfccAuthenticator, load_bundle
from gateway.authn.replay import InMemoryReplayCache, ReplayCache
from gateway.authn.request import normalize_uri
from gateway.authn.txn import TxnTokenVerifier
from gateway.authn.wit import TrustDomainKeys, WitAuthenticator
from gateway.clock import Clock
from gateway.config.load import LoadedConfig
from gateway.config.models import RouteConfig, TimeoutsConfig, UpstreamTlsConfig
from gateway.config.policy import (
    BearerInjectConfig,
    HeaderInjectConfig,
    IssuerExchangeConfig,
    ProfileConfig,
)
from gateway.config.source import ConfigError, Problem
from gateway.errors import ExchangeError, Reason
from gateway.exchange.aws import AwsExchanger
from gateway.exchange.base import Exchanger
from gateway.exchange.issuer import IssuerExchanger
from gateway.exchange.sts import (
    ClientCredentialsExchanger,
    GatewayTokenMinter,
    StsExchanger,
    StsObserver,
    TokenServiceClient,
)
from gateway.exchange.x509 import X509Exchanger
from gateway.inject.base import ClientCertificate, Injector
from gateway.inject.bearer import BearerInjector
from gateway.inject.dpop import DpopInjector
from gateway.inject.header import HeaderInjector
from gateway.inject.httpsig import HttpSigInjector
from gateway.inject.mtls import MtlsInjector
from gateway.inject.sigv4 import SigV4Injector
from gateway.inject.txn import TxnTokenInjector
from gateway.inject.wimse import WimseInjector
from gateway.keys import (
    RotatingKeys,
    SigningKey,
    jwks,
    load_or_create_key,
    load_private_key,
)
from gateway.policy.load import Policy, PolicyContext, load_policy


@dataclass(frozen=True)
class UpstreamSettings:
    """How to reach one upstream: timeouts and TLS. ``tls_key`` names its connection pool."""

    timeouts: TimeoutsConfig
    ssl_context: ssl.SSLContext | None
    server_name: str | None
    tls_key: str
    # Builds the same TLS settings plus a client certificate (the mTLS injector's).
    client_context: Callable[[ClientCertificate], ssl.SSLContext] | None = field(
        default=None, repr=False, compare=False)
    # When ssl_context is None: builds it, called by the pool only when it opens the pool.
    make_ssl_context: Callable[[], ssl.SSLContext] | None = field(
        default=None, repr=False, compare=False)

    def with_client_certificate(self, cert: ClientCertificate, dest: Any) -> UpstreamSettings:
        """These settings presenting ``cert``, in a connection pool of their own; its TLS
        context is built once, when that pool is opened."""
        if dest.scheme != "https" or self.client_context is None:
            raise ExchangeError(Reason.EXCHANGE_FAILED, "a client certificate needs an https "
                                "upstream (set upgrade_tls on the rule, or an https route)")
        return UpstreamSettings(self.timeouts, None, self.server_name,
                                f"{self.tls_key}|{cert.pool_key}",
                                make_ssl_context=functools.partial(self.client_context, cert))


@dataclass(frozen=True)
class Route:
    name: str
    host: str | None
    host_suffix: str | None
    path_prefix: str
    upstream: str
    strip_prefix: bool
    settings: UpstreamSettings
    audience_origins: tuple[str, ...] = ()

    def matches(self, host: str, path: str) -> bool:
        if self.host is not None and host != self.host:
            return False
        if self.host_suffix is not None and not host.endswith(self.host_suffix):
            return False
        return path.startswith(self.path_prefix)


@dataclass(frozen=True)
class ProfileRuntime:
    """A profile's built stages."""

    name: str
    config: ProfileConfig
    exchanger: Exchanger
    injectors: tuple[Injector, ...]
    fingerprint: str  # changes when the profile's config changes, so caches do not mix versions
    includes: tuple[ProfileRuntime, ...] = ()  # run first, in order (`include:`)
    needs_body: bool = False  # an injector here or in an included profile reads the body


# Explicit registries: config `type:` -> builder. No import-time discovery.
ExchangerBuilder = Callable[["Builder", str, ProfileConfig, Any], Exchanger]
InjectorBuilder = Callable[[Any, Clock], Injector]


def _build_issuer_exchanger(b: Builder, name: str, prof: ProfileConfig, cfg: Any) -> Exchanger:
    assert isinstance(cfg, IssuerExchangeConfig)
    if not b.signing_keys or b.issuer_url is None:
        raise ConfigError([Problem("policy", None, f"profiles.{name}", "no issuer configured")])
    issuer = b.loaded.config.issuer
    return IssuerExchanger(cfg, b.issuer_url, b.signing_keys[0], b.client_id, b.clock,
                           on_behalf_of=prof.on_behalf_of,
                           workload_identity=issuer.workload_identity if issuer else None)


def _minter(b: Builder) -> GatewayTokenMinter | None:
    if not b.signing_keys or b.issuer_url is None:
        return None
    return GatewayTokenMinter(b.issuer_url, b.signing_keys[0], b.client_id, b.clock)


def _build_sts_exchanger(b: Builder, name: str, prof: ProfileConfig, cfg: Any) -> Exchanger:
    return StsExchanger(cfg, b.token_services[cfg.sts], _minter(b), prof.on_behalf_of)


def _build_cc_exchanger(b: Builder, name: str, prof: ProfileConfig, cfg: Any) -> Exchanger:
    return ClientCredentialsExchanger(cfg, b.token_services[cfg.sts])


def _build_x509_exchanger(b: Builder, name: str, prof: ProfileConfig, cfg: Any) -> Exchanger:
    issuer = b.loaded.config.issuer
    if issuer is None or issuer.ca is None:
        raise ConfigError([Problem("policy", None, f"profiles.{name}",
                                   "exchange x509 needs issuer.ca in the gateway config")])
    lc = b.loaded
    try:
        chain = x509.load_pem_x509_certificates(lc.path(issuer.ca.cert).read_bytes())
        key = load_private_key(lc.path(issuer.ca.key))
    except (OSError, ValueError) as exc:
        raise ConfigError([Problem(str(lc.file), None, "issuer.ca",
                                   f"unusable CA files: {exc}")]) from None
    try:
        is_ca = chain[0].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ConfigError([Problem(str(lc.file), None, "issuer.ca.cert",
                                   "not a CA certificate (basicConstraints CA:true)")])
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if chain[0].public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise ConfigError([Problem(str(lc.file), None, "issuer.ca",
                                   "the key does not belong to the first certificate")])
    return X509Exchanger(cfg, chain, key, b.clock)


def _build_aws_exchanger(b: Builder, name: str, prof: ProfileConfig, cfg: Any) -> Exchanger:
    if importlib.util.find_spec("botocore") is None:
        raise ConfigError([Problem("policy", None, f"profiles.{name}", "exchange aws needs "
                                   "botocore: pip install 'wimse-gateway[aws]'")])
    if cfg.web_identity == "gateway_token" and _minter(b) is None:
        raise ConfigError([Problem("policy", None, f"profiles.{name}",
                                   "web_identity gateway_token needs an issuer")])
    return AwsExchanger(cfg, b.clock, _minter(b))


EXCHANGERS: dict[str, ExchangerBuilder] = {
    "issuer": _build_issuer_exchanger,
    "sts": _build_sts_exchanger,
    "client_credentials": _build_cc_exchanger,
    "x509": _build_x509_exchanger,
    "aws": _build_aws_exchanger,
}

INJECTORS: dict[str, InjectorBuilder] = {
    "bearer": lambda cfg, clock: BearerInjector(),
    "header": lambda cfg, clock: HeaderInjector(cfg.name, cfg.prefix),
    "wimse": lambda cfg, clock: WimseInjector(clock, cfg.wpt_lifetime),
    "txn_token": lambda cfg, clock: TxnTokenInjector(),
    "dpop": lambda cfg, clock: DpopInjector(clock),
    "httpsig": lambda cfg, clock: HttpSigInjector(clock, cfg.lifetime),
    "mtls": lambda cfg, clock: MtlsInjector(),
    "aws_sigv4": lambda cfg, clock: SigV4Injector(cfg.service, cfg.region,
                                                  cfg.payload == "signed"),
}
_ = (BearerInjectConfig, HeaderInjectConfig)  # the config shapes these builders take


def client_ssl_context(
    lc: LoadedConfig, tls: UpstreamTlsConfig | None, client: ClientCertificate | None = None
) -> ssl.SSLContext:
    """A TLS client context for upstream connections (origination and mTLS).

    ``client`` (a certificate the gateway issued for this caller) replaces the route's own
    client certificate. The ssl module loads keys only from files, so it goes through a
    private temporary directory that is removed before this returns.
    """
    if tls and tls.ca:
        ctx = ssl.create_default_context(cafile=str(lc.path(tls.ca)))
    else:
        ctx = ssl.create_default_context()
    if tls and not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client is not None:
        with tempfile.TemporaryDirectory(prefix="wimse-cert-") as tmp:  # mode 0700
            chain, key = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(client.private_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()))
            chain.write_bytes(client.chain_pem)
            ctx.load_cert_chain(str(chain), str(key))
    elif tls and tls.client_cert and tls.client_key:
        ctx.load_cert_chain(str(lc.path(tls.client_cert)), str(lc.path(tls.client_key)))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _tls_key(lc: LoadedConfig, tls: UpstreamTlsConfig | None) -> str:
    if tls is None:
        return "default"
    return json.dumps(tls.model_dump(), sort_keys=True) + str(lc.base_dir)


@dataclass
class Builder:
    """Carries what stage builders share while one runtime is being built."""

    loaded: LoadedConfig
    clock: Clock
    signing_keys: list[SigningKey] = field(default_factory=list)
    issuer_url: str | None = None
    client_id: str = "wimse-gateway"
    token_services: dict[str, TokenServiceClient] = field(default_factory=dict)


@dataclass
class Runtime:
    loaded: LoadedConfig
    policy: Policy
    authn: AuthenticatorChain
    routes: tuple[Route, ...]
    forward_settings: UpstreamSettings
    upgrade_tls_hosts: frozenset[str]
    profiles: dict[str, ProfileRuntime]
    signing_keys: tuple[SigningKey, ...]
    bundles: dict[str, list[x509.Certificate]]
    ssl_contexts: dict[str, ssl.SSLContext]  # tls_key -> context, one pool each
    token_services: dict[str, TokenServiceClient] = field(default_factory=dict)
    jwt_verifier: JwtVerifier | None = None
    txn_verifier: TxnTokenVerifier | None = None

    async def close(self) -> None:
        """Release what this version holds (STS connections); called after a reload."""
        for client in self.token_services.values():
            await client.close()

    @property
    def config(self) -> Any:
        return self.loaded.config

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return self.loaded.warnings + self.policy.warnings

    def targets_for(self, url: Any, route: Route | None, request_path: str) -> frozenset[str]:
        """Target URIs a proof may name for a request to ``url`` (see Inbound.targets).

        The destination itself, and each configured alias origin of the route joined with the
        path the caller addressed. Nothing comes from Host or X-Forwarded-Host.
        """
        out = {normalize_uri(str(url))}
        if route is not None:
            for origin in route.audience_origins:
                out.add(normalize_uri(origin + (request_path or "/")))
        out.discard(None)
        return frozenset(out)  # type: ignore[arg-type]

    def route_for(self, host: str, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(host, path):
                return route
        return None


def _signing_keys(lc: LoadedConfig, clock: Clock) -> list[SigningKey]:
    """The signing key first, then every other published key."""
    issuer = lc.config.issuer
    if issuer is None:
        return []
    if issuer.rotation and not issuer.keys:
        assert issuer.state_dir is not None
        _, published = RotatingKeys(lc.path(issuer.state_dir), issuer.rotation.period,
                                    issuer.rotation.overlap, clock).current()
        return published
    if issuer.keys:
        return [
            SigningKey.from_private_key(load_private_key(lc.path(k.file)), k.kid)
            for k in issuer.keys
        ]
    assert issuer.state_dir is not None
    key = load_or_create_key(lc.path(issuer.state_dir) / "issuer-es256.pem")
    return [SigningKey.from_private_key(key)]


def _key_source(lc: LoadedConfig, clock: Clock, where: str, jwks: str | None,
                url: str | None, ca: str | None, min_refresh: float) -> KeySource | None:
    try:
        if jwks:
            return StaticKeySource.from_file(lc.path(jwks))
        if url:
            ctx = ssl.create_default_context(cafile=str(lc.path(ca)) if ca else None)
            return RemoteKeySource(url, clock, min_refresh=min_refresh, ssl=ctx)
    except (ValueError, OSError) as exc:
        raise ConfigError([Problem(str(lc.file), None, where, f"unusable JWKS: {exc}")]) from None
    return None


def build_authenticators(lc: LoadedConfig, clock: Clock, bundles: dict[str, list[x509.Certificate]],
                         replay: ReplayCache) -> tuple[AuthenticatorChain, JwtVerifier | None]:
    """The configured mechanisms, in the configured order of preference."""
    cfg = lc.config
    a = cfg.authentication
    trust: dict[str, TrustDomainKeys] = {}
    for td, tdc in cfg.trust_domains.items():
        src = _key_source(lc, clock, f"trust_domains.{td}", tdc.jwks, tdc.jwks_url,
                          tdc.jwks_ca, tdc.jwks_min_refresh)
        if src is not None:
            trust[td] = TrustDomainKeys(src, frozenset(tdc.jwt_algorithms), tdc.clock_skew)
    issuers: dict[str, IssuerKeys] = {}
    for j, ic in enumerate(a.issuers):
        src = _key_source(lc, clock, f"authentication.issuers[{j}]", ic.jwks, ic.jwks_url,
                          ic.jwks_ca, ic.jwks_min_refresh)
        assert src is not None
        issuers[ic.issuer] = IssuerKeys(ic.issuer, src, frozenset(ic.algorithms),
                                        frozenset(ic.audiences), ic.clock_skew)
    verifier = JwtVerifier(trust, issuers, frozenset(a.audiences))
    mtls = MtlsAuthenticator(bundles, clock) if bundles else None
    by_name: dict[str, list[Authenticator]] = {"mtls": [], "wit": [], "dpop": [], "bearer": [],
                                               "httpsig": []}
    if mtls is not None:
        if a.trusted_proxies:
            by_name["mtls"].append(XfccAuthenticator(frozenset(a.trusted_proxies), mtls))
        by_name["mtls"].append(mtls)
    if trust:
        wit = WitAuthenticator(trust, replay, clock, a.max_wpt_lifetime)
        by_name["wit"].append(wit)
        by_name["httpsig"].append(HttpSigAuthenticator(trust, replay, clock, wit.verified_wit))
    if trust or issuers:
        by_name["bearer"].append(BearerAuthenticator(verifier, clock))
        by_name["dpop"].append(DpopAuthenticator(
            verifier, replay, clock, DpopSettings(algorithms=frozenset(a.dpop.algorithms),
                                                  max_age=a.dpop.max_age,
                                                  require_nonce=a.dpop.require_nonce)))
    chain: list[Authenticator] = []
    for name in a.methods:
        chain += by_name[name]
    return AuthenticatorChain(chain), verifier if (trust or issuers) else None


def build_runtime(lc: LoadedConfig, clock: Clock, replay: ReplayCache | None = None,
                  observe_sts: StsObserver | None = None) -> Runtime:
    """Build every stage from a loaded config. Raises ConfigError on any problem.

    ``replay`` is process-wide so that a reload does not forget which proofs were used.
    """
    cfg = lc.config
    try:
        bundles = {
            td: load_bundle(lc.path(tdc.x509_bundle).read_bytes())
            for td, tdc in cfg.trust_domains.items()
            if tdc.x509_bundle
        }
    except ValueError as exc:
        raise ConfigError([Problem(str(lc.file), None, "trust_domains",
                                   f"unreadable x509_bundle: {exc}")]) from None
    try:
        keys = _signing_keys(lc, clock)
    except (ValueError, OSError) as exc:
        raise ConfigError([Problem(str(lc.file), None, "issuer.keys",
                                   f"unusable key: {exc}")]) from None

    policy = load_policy(
        [lc.path(p) for p in cfg.policy.files],
        PolicyContext(
            routes=frozenset(r.name for r in cfg.routes),
            trust_domains=frozenset(cfg.trust_domains),
            has_issuer=cfg.issuer is not None,
            token_services=frozenset(cfg.token_services),
        ),
    )
    builder = Builder(lc, clock, keys, cfg.issuer.issuer if cfg.issuer else None,
                      cfg.gateway_name)

    ssl_contexts: dict[str, ssl.SSLContext] = {}
    for name, ts in cfg.token_services.items():
        try:
            ctx = client_ssl_context(lc, ts.tls)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError([Problem(str(lc.file), None, f"token_services.{name}.tls",
                                       f"unusable TLS files: {exc}")]) from None
        builder.token_services[name] = TokenServiceClient(
            name, ts, clock, keys[0] if keys else None, ctx, lc.base_dir, observe_sts)

    def settings(timeouts: TimeoutsConfig, tls: UpstreamTlsConfig | None) -> UpstreamSettings:
        key = _tls_key(lc, tls)
        if key not in ssl_contexts:
            try:
                ssl_contexts[key] = client_ssl_context(lc, tls)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError([Problem(str(lc.file), None, "tls", f"unusable TLS files: "
                                           f"{exc}")]) from None
        return UpstreamSettings(timeouts, ssl_contexts[key], tls.server_name if tls else None,
                                key, functools.partial(client_ssl_context, lc, tls))

    routes = tuple(_route(r, settings) for r in cfg.routes)
    forward = settings(cfg.forward_proxy.timeouts, cfg.forward_proxy.tls)

    profiles: dict[str, ProfileRuntime] = {}
    for name, prof in policy.profiles.items():
        exchanger = EXCHANGERS[prof.exchange.type](builder, name, prof, prof.exchange)
        injectors = tuple(INJECTORS[i.type](i, clock) for i in prof.inject)
        fp = hashlib.sha256(prof.model_dump_json().encode()).hexdigest()[:16]
        profiles[name] = ProfileRuntime(name, prof, exchanger, injectors, fp,
                                        needs_body=any(i.needs_body for i in injectors))
    for name, p in profiles.items():  # included profiles include nothing themselves
        if p.config.include:
            includes = tuple(profiles[i] for i in p.config.include)
            profiles[name] = dataclasses.replace(
                p, includes=includes, needs_body=p.needs_body or any(q.needs_body
                                                                     for q in includes))

    authn, jwt_verifier = build_authenticators(lc, clock, bundles,
                                               replay or InMemoryReplayCache(clock))
    return Runtime(
        loaded=lc,
        policy=policy,
        authn=authn,
        routes=routes,
        forward_settings=forward,
        upgrade_tls_hosts=frozenset(h.lower() for h in cfg.forward_proxy.upgrade_tls_hosts),
        profiles=profiles,
        signing_keys=tuple(keys),
        bundles=bundles,
        ssl_contexts=ssl_contexts,
        token_services=builder.token_services,
        jwt_verifier=jwt_verifier,
        txn_verifier=_txn_verifier(lc, keys, jwt_verifier),
    )


def _txn_verifier(lc: LoadedConfig, keys: list[SigningKey], jwt_verifier: JwtVerifier | None
                  ) -> TxnTokenVerifier | None:
    """Txn-Tokens from our own issuer, or from an issuer the JWT verifier already trusts (its
    key sources are shared, so their JWKS is fetched and cached once)."""
    a = lc.config.authentication
    if not a.txn_token_audiences:
        return None
    sources: dict[str, KeySource] = {}
    if jwt_verifier is not None:
        sources.update((name, ik.source) for name, ik in jwt_verifier.issuers.items())
    if lc.config.issuer and keys:
        sources[lc.config.issuer.issuer] = StaticKeySource(KeySet(jwks(keys)))
    return TxnTokenVerifier(sources, frozenset(a.txn_token_audiences))


def _route(r: RouteConfig, settings: Callable[..., UpstreamSettings]) -> Route:
    host = r.match.host.lower() if r.match.host else None
    suffix = None
    if host and host.startswith("*."):
        suffix, host = host[1:], None
    return Route(
        name=r.name,
        host=host,
        host_suffix=suffix,
        path_prefix=r.match.path_prefix,
        upstream=r.upstream.rstrip("/"),
        strip_prefix=r.strip_prefix,
        settings=settings(r.timeouts, r.tls),
        audience_origins=tuple(o.rstrip("/") for o in r.audience_origins),
    )


def server_ssl_context(lc: LoadedConfig, listener_index: int,
                       bundles: dict[str, list[x509.Certificate]]) -> ssl.SSLContext | None:
    """The TLS server context of one listener, asking for client certificates as configured."""
    lst = lc.config.listeners[listener_index]
    if lst.tls is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(lc.path(lst.tls.cert)), str(lc.path(lst.tls.key)))
    if lst.tls.client_cert != "none":
        ctx.verify_mode = (
            ssl.CERT_REQUIRED if lst.tls.client_cert == "required" else ssl.CERT_OPTIONAL
        )
        cas: list[Path] = [lc.path(p) for p in lst.tls.client_ca or []]
        if not cas:
            cas = [lc.path(td.x509_bundle) for td in lc.config.trust_domains.values()
                   if td.x509_bundle]
        for ca in cas:
            ctx.load_verify_locations(cafile=str(ca))
    return ctx
