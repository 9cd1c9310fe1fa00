"""Typed, frozen gateway configuration (the shape of ``config/*.yaml``).

Strict models: unknown keys are errors and YAML's ``no`` does not silently become a string or a
number. File paths are kept as written here and resolved against the config file by the loader.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ServerTlsConfig(Strict):
    cert: str = Field(description="PEM server certificate chain, relative to the config file")
    key: str = Field(description="PEM private key for `cert`")
    client_cert: Literal["none", "optional", "required"] = Field(
        "optional", description="Whether the TLS handshake asks for a client certificate"
    )
    client_ca: list[str] | None = Field(
        None,
        description="PEM bundles that client certificates must chain to; "
        "default: every trust domain's x509_bundle",
    )


class ListenerConfig(Strict):
    name: str
    address: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    tls: ServerTlsConfig | None = None
    reverse_proxy: bool = Field(True, description="Serve the configured routes")
    forward_proxy: bool = Field(
        False, description="Accept absolute-form requests (HTTP_PROXY style)"
    )


class TimeoutsConfig(Strict):
    connect: float = Field(5.0, gt=0)
    read: float = Field(30.0, gt=0, description="Longest wait for the next bytes from upstream")
    total: float | None = Field(None, gt=0, description="Whole exchange, or no limit")


class UpstreamTlsConfig(Strict):
    ca: str | None = Field(None, description="PEM bundle to verify the upstream; default: system")
    verify: bool = True
    server_name: str | None = None
    client_cert: str | None = Field(None, description="PEM client certificate for mTLS")
    client_key: str | None = None


class RouteMatchConfig(Strict):
    host: str | None = Field(None, description="Host header to match (no port); `*.` wildcard ok")
    path_prefix: str = "/"

    @field_validator("path_prefix")
    @classmethod
    def _starts_with_slash(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("must start with /")
        return v


class RouteConfig(Strict):
    name: str
    match: RouteMatchConfig = RouteMatchConfig()
    upstream: str = Field(description="Upstream base URL, http:// or https://")
    strip_prefix: bool = Field(False, description="Remove match.path_prefix before forwarding")
    audience_origins: list[str] = Field(
        default_factory=list,
        description="Origins callers may name in proofs (WPT aud, DPoP htu) instead of the "
        "upstream's, e.g. the gateway's own https://gw.local:8443 in reverse-proxy mode",
    )
    timeouts: TimeoutsConfig = TimeoutsConfig()
    tls: UpstreamTlsConfig | None = None


class ForwardProxyConfig(Strict):
    timeouts: TimeoutsConfig = TimeoutsConfig()
    tls: UpstreamTlsConfig | None = Field(
        None, description="TLS settings when the upstream leg is https (incl. origination)"
    )
    upgrade_tls_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts whose plain-http requests are sent upstream over https",
    )


class TrustDomainConfig(Strict):
    x509_bundle: str | None = Field(None, description="PEM CA bundle for X509-SVIDs")
    jwks: str | None = Field(None, description="JWKS file with JWT-SVID / WIT signing keys")
    jwks_url: str | None = Field(None, description="https URL of the JWKS (instead of `jwks`)")
    jwks_ca: str | None = Field(None, description="PEM bundle to verify jwks_url; default system")
    jwks_min_refresh: float = Field(
        60.0, ge=1, description="Seconds between refetches triggered by an unknown kid")
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["ES256", "ES384", "RS256", "EdDSA"])
    clock_skew: float = Field(30.0, ge=0, le=300)


class IssuerKeyConfig(Strict):
    file: str
    kid: str | None = None


class IssuerRotationConfig(Strict):
    period: float = Field(86400.0, ge=60, description="Seconds each key signs")
    overlap: float = Field(3600.0, gt=0, description="Seconds a key is published before it "
                           "signs; verifiers must refresh their JWKS at least this often")


class IssuerCaConfig(Strict):
    cert: str = Field(description="PEM: the issuing (intermediate) CA certificate, followed by "
                      "any further intermediates up to but not including the root; sent as "
                      "the chain of every certificate issued")
    key: str = Field(description="PEM private key of the issuing CA")


class IssuerConfig(Strict):
    issuer: str = Field(description="`iss` of tokens minted by the gateway")
    keys: list[IssuerKeyConfig] = Field(
        default_factory=list,
        description="PEM private keys; the first signs, the rest are published for rotation",
    )
    state_dir: str | None = Field(
        None, description="Generate an ES256 key here when `keys` is empty"
    )
    rotation: IssuerRotationConfig | None = Field(
        None, description="Rotate state_dir keys on a schedule, publishing each key before "
        "it signs")
    workload_identity: str | None = Field(
        None, description="The gateway's own workload identifier (WITs it mints for itself, "
        "`req_wl` of transaction tokens)")
    ca: IssuerCaConfig | None = Field(
        None, description="Intermediate CA for short-lived client certificates (exchange x509)")


class ClientAuthConfig(Strict):
    method: Literal["private_key_jwt", "client_secret_basic", "client_secret_post",
                    "tls_client_auth", "none"] = "private_key_jwt"
    client_id: str = Field(min_length=1)
    secret_file: str | None = Field(None, description="File holding the client secret")
    secret_env: str | None = Field(None, description="Environment variable holding it")
    assertion_audience: str | None = Field(
        None, description="`aud` of private_key_jwt assertions; default: the STS issuer "
        "identifier (RFC 7523bis), else the token endpoint")
    assertion_lifetime: int = Field(60, ge=5, le=300)


class TokenServiceConfig(Strict):
    issuer: str | None = Field(None, description="Issuer URL; the token endpoint is discovered "
                               "from its RFC 8414 metadata (cached)")
    token_endpoint: str | None = None
    client_auth: ClientAuthConfig
    tls: UpstreamTlsConfig | None = Field(None, description="CA, and client cert for mTLS")
    timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=5, description="On 5xx and connection errors only")
    breaker_failures: int = Field(5, ge=1, description="Consecutive failures that open it")
    breaker_reset: float = Field(30.0, gt=0, description="Seconds open before a trial call")
    max_expires_in: int = Field(86400, ge=1, description="Longer answers are nonsense")


class TokenEndpointConfig(Strict):
    listener: str = Field(description="Listener that serves POST <path> (RFC 8693)")
    path: str = "/token"
    public_url: str | None = Field(
        None, description="The endpoint's URL as clients see it (metadata, proof audiences)")


class ExchangeCacheConfig(Strict):
    max_entries: int = Field(100_000, ge=1)
    refresh_ahead: float = Field(
        0.8, gt=0, le=1, description="Refresh in the background after this share of lifetime")
    expiry_margin: float = Field(5.0, ge=0, description="Never hand out a credential this "
                                 "close to its expiry")
    failure_ttl: float = Field(2.0, ge=0, description="Remember a failed exchange this long")


class AdminConfig(Strict):
    address: str = "127.0.0.1"
    port: int = Field(9901, ge=0, le=65535)


class LimitsConfig(Strict):
    max_header_bytes: int = Field(16384, ge=1024, description="All request headers together")
    max_request_body_bytes: int | None = Field(
        None, ge=0, description="Largest request body streamed upstream; null: no limit"
    )
    max_buffered_body_bytes: int = Field(
        1024 * 1024, ge=0,
        description="Largest body read whole, when a verifier needs it (Content-Digest)")
    max_connections_per_upstream: int = Field(256, ge=1)
    shutdown_grace: float = Field(15.0, ge=0, description="Seconds SIGTERM waits for in-flight")


class PolicySourceConfig(Strict):
    files: list[str] = Field(min_length=1, description="Merged in this order")
    watch: bool = True
    watch_interval: float = Field(2.0, gt=0)


class AuditConfig(Strict):
    path: str = Field("-", description="JSON lines file, or - for standard output")


class IssuerTrustConfig(Strict):
    issuer: str = Field(description="`iss` of accepted OAuth/OIDC JWTs")
    jwks: str | None = None
    jwks_url: str | None = None
    jwks_ca: str | None = None
    jwks_min_refresh: float = Field(60.0, ge=1)
    audiences: list[str] = Field(default_factory=list,
                                 description="default: authentication.audiences")
    algorithms: list[str] = Field(default_factory=lambda: ["ES256", "RS256", "PS256", "EdDSA"])
    clock_skew: float = Field(30.0, ge=0, le=300)


class DpopConfig(Strict):
    algorithms: list[str] = Field(default_factory=lambda: ["ES256", "EdDSA", "PS256", "RS256"])
    max_age: float = Field(60.0, gt=0, le=600, description="Seconds a proof is accepted")
    require_nonce: bool = False


class AuthenticationConfig(Strict):
    methods: list[Literal["mtls", "wit", "httpsig", "dpop", "bearer"]] = Field(
        default_factory=lambda: ["httpsig", "wit", "dpop", "bearer", "mtls"],
        description="Mechanisms tried, in this order; the first whose credential is present "
        "decides (a failing credential is never skipped for a weaker one)",
    )
    audiences: list[str] = Field(
        default_factory=list,
        description="`aud` values that name this gateway in bearer JWTs (JWT-SVIDs)")
    issuers: list[IssuerTrustConfig] = Field(default_factory=list)
    dpop: DpopConfig = DpopConfig()
    max_wpt_lifetime: float = Field(300.0, gt=0, le=3600)
    replay_cache_entries: int = Field(200_000, ge=1000)
    txn_token_audiences: list[str] = Field(
        default_factory=list,
        description="Trust domains whose incoming Txn-Tokens are verified and offered to "
        "policy as the `txn_token` claim (signed by this gateway's issuer keys or an issuer "
        "under `issuers`); empty: Txn-Tokens pass through unread")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Peer addresses whose X-Forwarded-Client-Cert is believed (a mesh "
        "sidecar); from anyone else the header is stripped")


class GatewayConfig(Strict):
    listeners: list[ListenerConfig] = Field(min_length=1)
    routes: list[RouteConfig] = Field(default_factory=list)
    forward_proxy: ForwardProxyConfig = ForwardProxyConfig()
    trust_domains: dict[str, TrustDomainConfig] = Field(default_factory=dict)
    authentication: AuthenticationConfig = AuthenticationConfig()
    issuer: IssuerConfig | None = None
    token_services: dict[str, TokenServiceConfig] = Field(default_factory=dict)
    exchange_cache: ExchangeCacheConfig = ExchangeCacheConfig()
    token_endpoint: TokenEndpointConfig | None = Field(
        None, description="Serve the exchange as an RFC 8693 token endpoint")
    admin: AdminConfig | None = AdminConfig()
    limits: LimitsConfig = LimitsConfig()
    policy: PolicySourceConfig
    audit: AuditConfig = AuditConfig()
    gateway_name: str = Field("wimse-gateway", description="Used in Via and audit lines")
