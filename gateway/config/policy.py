"""The shape of policy files (``policies/*.yaml``): rules and exchange profiles.

Field names are what operators type; descriptions end up in the JSON Schema their editors use.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.models import Strict

StrOrList = str | list[str]


class CallerMatchConfig(Strict):
    identity: StrOrList | None = Field(
        None,
        description="Workload identifier(s), exact or glob: `*` one path segment, `**` any "
        "number of segments (spiffe://td/ns/*/sa/api, spiffe://td/**)",
    )
    trust_domain: StrOrList | None = None
    methods: list[Literal["mtls", "wit", "httpsig", "dpop", "bearer", "none"]] | None = Field(
        None, description="Authentication methods accepted; `none` admits unauthenticated callers"
    )
    proof_of_possession: bool | None = Field(
        None, description="true: only callers whose credential is bound to a key"
    )
    claims: dict[str, str | int | bool | list[str | int | bool]] | None = Field(
        None, description="Claim equals the value (or one of the values; list claims: contains)"
    )


class DestinationMatchConfig(Strict):
    route: StrOrList | None = Field(None, description="Route name(s); `forward-proxy` for "
                                    "absolute-form requests, `token-endpoint` for requests to "
                                    "the gateway's own token endpoint")
    scheme: Literal["http", "https"] | None = None
    host: StrOrList | None = Field(
        None, description="Upstream host(s), exact or `*.example.com` (any subdomain)"
    )
    port: int | list[int] | None = None
    path: str | None = Field(
        None, description="Glob on the upstream path: `*` one segment, `**` any number"
    )
    path_prefix: str | None = None
    methods: list[str] | None = Field(None, description="HTTP methods, upper case")

    @field_validator("methods")
    @classmethod
    def _upper(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            for m in v:
                if m != m.upper() or not m.isalpha():
                    raise ValueError(f"HTTP methods are upper-case words, got {m!r}")
        return v


class RuleConfig(Strict):
    id: str = Field(min_length=1, description="Unique; shown in audit lines and explain output")
    description: str | None = None
    caller: CallerMatchConfig | None = None
    destination: DestinationMatchConfig | None = None
    action: Literal["deny", "forward", "exchange"]
    profile: str | None = Field(None, description="Profile name, required for `exchange`")
    upgrade_tls: bool = Field(False, description="Send plain-http requests upstream over https")
    pass_credentials: bool = Field(
        False, description="Forward the caller's own credential headers (off: stripped)"
    )
    allow_lifetime_extension: bool = Field(
        False,
        description="GUARD RAIL OFF: the credential handed out may outlive the caller's",
    )
    allow_assurance_upgrade: bool = Field(
        False,
        description="GUARD RAIL OFF: a bearer caller may get a proof-of-possession credential",
    )

    @model_validator(mode="after")
    def _profile_iff_exchange(self) -> RuleConfig:
        if self.action == "exchange" and not self.profile:
            raise ValueError("action exchange needs a profile")
        if self.action != "exchange" and self.profile:
            raise ValueError(f"a profile makes no sense with action {self.action}")
        return self


class IssuerExchangeConfig(Strict):
    type: Literal["issuer"]
    token: Literal["access_token", "wit", "txn_token"] = Field(
        "access_token",
        description="What to mint: an RFC 9068 access token (at+jwt), a WIMSE Workload "
        "Identity Token with a fresh key for the next hop (inject with `wimse`), or an OAuth "
        "transaction token (inject with `txn_token`)")
    audience: str | None = Field(
        None, description="`aud`; default: the upstream origin (access_token), the caller's "
        "trust domain (txn_token)")
    scope: str | None = Field(None, description="access_token scope; txn_token purpose")
    lifetime: int = Field(300, ge=1, le=86400, description="Seconds, capped by the caller's")
    identity: Literal["caller", "gateway"] = Field(
        "caller", description="wit: whose identity the WIT names; `gateway` puts the caller "
        "in `act`")
    carry_claims: list[str] = Field(
        default_factory=list, description="Caller claims copied into the minted token"
    )

    @model_validator(mode="after")
    def _txn_needs_scope(self) -> IssuerExchangeConfig:
        if self.token == "txn_token" and not self.scope:
            raise ValueError("a transaction token needs a scope (its purpose)")
        return self


class StsExchangeConfig(Strict):
    type: Literal["sts"]
    sts: str = Field(description="Name under `token_services` in the gateway config")
    subject: Literal["caller_token", "gateway_token"] = Field(
        "gateway_token",
        description="subject_token: the caller's own bearer JWT (bearer/DPoP callers), or a "
        "short-lived token the gateway mints asserting the verified caller (any caller; a WIT "
        "is never sent as a bearer subject_token)")
    audience: str | None = None
    resource: str | None = None
    scope: str | None = None
    requested_token_type: str | None = Field(
        None, description="e.g. urn:ietf:params:oauth:token-type:access_token")
    lifetime: int = Field(300, ge=1, le=86400, description="Longest credential wanted")
    dpop: bool = Field(False, description="Ask for a DPoP-bound token (RFC 9449 5) with a "
                       "fresh key; inject it with `dpop`")


class ClientCredentialsExchangeConfig(Strict):
    type: Literal["client_credentials"]
    sts: str = Field(description="Name under `token_services`")
    client_id: Literal["caller_identity", "configured"] = Field(
        "caller_identity",
        description="caller_identity: the caller's SPIFFE ID is the OAuth client_id and the "
        "gateway signs its assertion (no per-workload secret); configured: the STS's client_id")
    resource: str | None = None
    scope: str | None = None
    lifetime: int = Field(300, ge=1, le=86400)
    dpop: bool = Field(False, description="Ask for a DPoP-bound token; inject it with `dpop`")


class X509ExchangeConfig(Strict):
    type: Literal["x509"] = Field(description="A short-lived client certificate for the "
                                  "caller's identifier, from `issuer.ca`; inject with `mtls`")
    lifetime: int = Field(3600, ge=60, le=86400, description="Seconds, capped by the caller's")
    min_lifetime: int = Field(
        60, ge=1, description="Refuse (policy.lifetime_extension) when the caller's remaining "
        "lifetime leaves less than this")


class AwsExchangeConfig(Strict):
    type: Literal["aws"] = Field(description="AWS STS AssumeRoleWithWebIdentity; inject with "
                                 "`aws_sigv4`")
    role_arn: str = Field(pattern=r"^arn:aws[\w-]*:iam::\d{12}:role/.+$")
    region: str = Field("us-east-1", min_length=1)
    endpoint: str | None = Field(None, description="STS endpoint URL; default: AWS's own")
    web_identity: Literal["caller_token", "gateway_token"] = Field(
        "caller_token", description="The caller's own JWT (e.g. a JWT-SVID), or one the "
        "gateway mints for the verified caller with `audience`")
    audience: str = Field("sts.amazonaws.com", description="aud of a minted web identity token")
    lifetime: int = Field(3600, ge=900, le=43200,
                          description="DurationSeconds wanted; capped by the caller's lifetime")
    timeout: float = Field(5.0, gt=0, le=60)


ExchangeConfig = Annotated[
    IssuerExchangeConfig | StsExchangeConfig | ClientCredentialsExchangeConfig
    | X509ExchangeConfig | AwsExchangeConfig,
    Field(discriminator="type"),
]


class BearerInjectConfig(Strict):
    type: Literal["bearer"]


class HeaderInjectConfig(Strict):
    type: Literal["header"]
    name: str = Field(min_length=1)
    prefix: str = ""

    @field_validator("name")
    @classmethod
    def _token(cls, v: str) -> str:
        if not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("not an HTTP header name")
        return v


class WimseInjectConfig(Strict):
    type: Literal["wimse"] = Field(description="Workload-Identity-Token + a fresh "
                                   "Workload-Proof-Token per request (needs token: wit)")
    wpt_lifetime: int = Field(60, ge=1, le=300)


class DpopInjectConfig(Strict):
    type: Literal["dpop"] = Field(description="Authorization: DPoP <token> plus a fresh DPoP "
                                  "proof per request (needs a DPoP-bound token: dpop: true)")


class TxnTokenInjectConfig(Strict):
    type: Literal["txn_token"] = Field(description="Txn-Token header (needs token: txn_token)")


class HttpSigInjectConfig(Strict):
    type: Literal["httpsig"] = Field(description="Workload-Identity-Token + a WIMSE HTTP "
                                     "Message Signature of the request (needs token: wit)")
    lifetime: int = Field(60, ge=1, le=300, description="Signature `expires` - `created`")


class MtlsInjectConfig(Strict):
    type: Literal["mtls"] = Field(description="Present the certificate from `exchange: x509` "
                                  "on the upstream TLS connection")


class SigV4InjectConfig(Strict):
    type: Literal["aws_sigv4"] = Field(description="AWS Signature Version 4 with the "
                                       "credentials from `exchange: aws`")
    service: str = Field(min_length=1, description="e.g. s3, execute-api, sqs")
    region: str = Field("us-east-1", min_length=1)
    payload: Literal["signed", "unsigned"] = Field(
        "signed", description="signed: hash the body (read whole, bounded); unsigned: "
        "UNSIGNED-PAYLOAD, body streamed (S3 only)")

    @model_validator(mode="after")
    def _unsigned_is_s3(self) -> SigV4InjectConfig:
        if self.payload == "unsigned" and self.service != "s3":
            raise ValueError("an unsigned payload is accepted by S3 only")
        return self


InjectConfig = Annotated[
    BearerInjectConfig | HeaderInjectConfig | WimseInjectConfig | TxnTokenInjectConfig
    | DpopInjectConfig | HttpSigInjectConfig | MtlsInjectConfig | SigV4InjectConfig,
    Field(discriminator="type"),
]

# What each injector needs from the exchange; a mismatch is a policy error at load time.
_INJECT_NEEDS = {
    "wimse": ("a WIT", lambda e: e.type == "issuer" and e.token == "wit"),
    "httpsig": ("a WIT", lambda e: e.type == "issuer" and e.token == "wit"),
    "txn_token": ("a transaction token", lambda e: e.type == "issuer" and e.token == "txn_token"),
    "dpop": ("a DPoP-bound token", lambda e: getattr(e, "dpop", False)),
    "mtls": ("a certificate", lambda e: e.type == "x509"),
    "aws_sigv4": ("AWS credentials", lambda e: e.type == "aws"),
    "bearer": ("a bearer token", lambda e: e.type not in ("x509", "aws")
               and not getattr(e, "dpop", False)),
    "header": ("a token", lambda e: e.type not in ("x509", "aws")),
}


class ProfileConfig(Strict):
    description: str | None = None
    exchange: ExchangeConfig
    inject: list[InjectConfig] = Field(min_length=1)
    on_behalf_of: bool = Field(
        False, description="The gateway acts for the caller (RFC 8693 `act`); must be declared"
    )
    include: list[str] = Field(
        default_factory=list, description="Profiles whose exchange and injections run first, in "
        "order (e.g. a transaction token, then a WIT whose proof covers it); one level deep")

    @model_validator(mode="after")
    def _injectors_fit_exchange(self) -> ProfileConfig:
        for inj in self.inject:
            what, fits = _INJECT_NEEDS[inj.type]
            if not fits(self.exchange):
                raise ValueError(f"inject {inj.type} needs {what}, which exchange type "
                                 f"{self.exchange.type} does not produce")
        return self


class PolicyFileConfig(Strict):
    schema_: str | None = Field(None, alias="$schema")
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)
