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


ExchangeConfig = Annotated[
    IssuerExchangeConfig | StsExchangeConfig | ClientCredentialsExchangeConfig,
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


InjectConfig = Annotated[
    BearerInjectConfig | HeaderInjectConfig | WimseInjectConfig | TxnTokenInjectConfig
    | DpopInjectConfig,
    Field(discriminator="type"),
]


class ProfileConfig(Strict):
    description: str | None = None
    exchange: ExchangeConfig
    inject: list[InjectConfig] = Field(min_length=1)
    on_behalf_of: bool = Field(
        False, description="The gateway acts for the caller (RFC 8693 `act`); must be declared"
    )


class PolicyFileConfig(Strict):
    schema_: str | None = Field(None, alias="$schema")
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)
