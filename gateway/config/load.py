"""Load and check the gateway configuration: shape first, then meaning.

Errors read ``file:line: path: message`` so an operator can jump straight to the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydantic
from yarl import URL

from gateway.config.models import GatewayConfig, UpstreamTlsConfig
from gateway.config.source import (
    ConfigError,
    Document,
    PathKey,
    Problem,
    load_yaml,
    validation_problems,
)


@dataclass(frozen=True)
class LoadedConfig:
    """A valid configuration and where it came from."""

    config: GatewayConfig
    file: Path
    document: Document
    warnings: tuple[Problem, ...] = ()

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    def path(self, value: str) -> Path:
        """Resolve a path written in the config file against the file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def load_config(file: str | Path) -> LoadedConfig:
    """Parse, validate and check a gateway config file; raise ConfigError listing every problem."""
    path = Path(file).resolve()
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "expected a mapping at the top level")])
    try:
        cfg = GatewayConfig.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        raise ConfigError(validation_problems(doc, exc)) from None
    loaded = LoadedConfig(config=cfg, file=path, document=doc)
    problems = _meaning_problems(loaded)
    if problems:
        raise ConfigError(problems)
    return loaded


def _meaning_problems(lc: LoadedConfig) -> list[Problem]:
    cfg, doc = lc.config, lc.document
    problems: list[Problem] = []

    def need_file(where: PathKey, value: str | None) -> None:
        if value is not None and not lc.path(value).is_file():
            problems.append(doc.problem(where, f"file not found: {value}"))

    def need_unique(kind: str, names: list[str]) -> None:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                problems.append(doc.problem((kind, i, "name"), f"duplicate name {name!r}"))
            seen.add(name)

    def check_upstream_tls(where: PathKey, tls: UpstreamTlsConfig | None) -> None:
        if tls is None:
            return
        need_file((*where, "ca"), tls.ca)
        need_file((*where, "client_cert"), tls.client_cert)
        need_file((*where, "client_key"), tls.client_key)
        if (tls.client_cert is None) != (tls.client_key is None):
            problems.append(
                doc.problem(where, "client_cert and client_key go together")
            )

    need_unique("listeners", [x.name for x in cfg.listeners])
    need_unique("routes", [r.name for r in cfg.routes])

    for i, lst in enumerate(cfg.listeners):
        if lst.tls:
            need_file(("listeners", i, "tls", "cert"), lst.tls.cert)
            need_file(("listeners", i, "tls", "key"), lst.tls.key)
            for j, ca in enumerate(lst.tls.client_ca or []):
                need_file(("listeners", i, "tls", "client_ca", j), ca)
            if (
                lst.tls.client_cert != "none"
                and not lst.tls.client_ca
                and not any(td.x509_bundle for td in cfg.trust_domains.values())
            ):
                problems.append(
                    doc.problem(
                        ("listeners", i, "tls", "client_cert"),
                        "client certificates need client_ca or a trust domain x509_bundle",
                    )
                )
        if not (lst.reverse_proxy or lst.forward_proxy):
            problems.append(
                doc.problem(("listeners", i), "serves nothing: enable reverse_proxy or "
                            "forward_proxy")
            )

    for i, route in enumerate(cfg.routes):
        url = URL(route.upstream)
        if url.scheme not in ("http", "https") or not url.host:
            problems.append(
                doc.problem(("routes", i, "upstream"), "expected an http:// or https:// URL")
            )
        elif url.query_string or url.fragment:
            problems.append(
                doc.problem(("routes", i, "upstream"), "must not carry a query or fragment")
            )
        check_upstream_tls(("routes", i, "tls"), route.tls)
    check_upstream_tls(("forward_proxy", "tls"), cfg.forward_proxy.tls)

    for name, td in cfg.trust_domains.items():
        if not name or "/" in name or ":" in name or name != name.lower():
            problems.append(
                doc.problem(("trust_domains", name), "a trust domain is a lower-case name "
                            "without scheme, port or path")
            )
        need_file(("trust_domains", name, "x509_bundle"), td.x509_bundle)
        need_file(("trust_domains", name, "jwks"), td.jwks)
        need_file(("trust_domains", name, "jwks_ca"), td.jwks_ca)
        if td.jwks and td.jwks_url:
            problems.append(doc.problem(("trust_domains", name), "jwks and jwks_url exclude "
                                        "each other"))
        if td.jwks_url and not td.jwks_url.startswith("https://"):
            problems.append(doc.problem(("trust_domains", name, "jwks_url"),
                                        "keys are fetched over https only"))
    for j, iss in enumerate(cfg.authentication.issuers):
        where = ("authentication", "issuers", j)
        need_file((*where, "jwks"), iss.jwks)
        need_file((*where, "jwks_ca"), iss.jwks_ca)
        if (iss.jwks is None) == (iss.jwks_url is None):
            problems.append(doc.problem(where, "needs exactly one of jwks, jwks_url"))
        if iss.jwks_url and not iss.jwks_url.startswith("https://"):
            problems.append(doc.problem((*where, "jwks_url"), "keys are fetched over https only"))

    if cfg.issuer:
        for j, key in enumerate(cfg.issuer.keys):
            need_file(("issuer", "keys", j, "file"), key.file)
        if not cfg.issuer.keys and not cfg.issuer.state_dir:
            problems.append(doc.problem(("issuer",), "needs keys or a state_dir to keep one in"))
        rot = cfg.issuer.rotation
        if rot is not None:
            if cfg.issuer.keys or not cfg.issuer.state_dir:
                problems.append(doc.problem(("issuer", "rotation"), "rotation manages keys in "
                                            "state_dir (remove `keys`)"))
            if rot.overlap >= rot.period:
                problems.append(doc.problem(("issuer", "rotation", "overlap"),
                                            "must be shorter than the period"))

    for name, ts in cfg.token_services.items():
        where = ("token_services", name)
        if (ts.issuer is None) == (ts.token_endpoint is None):
            problems.append(doc.problem(where, "needs exactly one of issuer, token_endpoint"))
        for key in ("issuer", "token_endpoint"):
            url = getattr(ts, key)
            if url is not None and not url.startswith(("https://", "http://127.0.0.1",
                                                       "http://localhost")):
                problems.append(doc.problem((*where, key), "token services are reached over "
                                            "https (plain http only on loopback)"))
        ca = ts.client_auth
        if ca.method in ("client_secret_basic", "client_secret_post"):
            if (ca.secret_file is None) == (ca.secret_env is None):
                problems.append(doc.problem((*where, "client_auth"),
                                            "a client secret comes from secret_file or "
                                            "secret_env (never from this file)"))
            need_file((*where, "client_auth", "secret_file"), ca.secret_file)
        if ca.method == "private_key_jwt" and cfg.issuer is None:
            problems.append(doc.problem((*where, "client_auth", "method"),
                                        "private_key_jwt signs with the issuer key: configure "
                                        "`issuer`"))
        if ca.method == "tls_client_auth" and not (ts.tls and ts.tls.client_cert):
            problems.append(doc.problem((*where, "client_auth", "method"),
                                        "tls_client_auth needs tls.client_cert"))
        check_upstream_tls((*where, "tls"), ts.tls)
    if cfg.token_endpoint and cfg.token_endpoint.listener not in {x.name for x in cfg.listeners}:
        problems.append(doc.problem(("token_endpoint", "listener"), "unknown listener"))

    for j, pf in enumerate(cfg.policy.files):
        need_file(("policy", "files", j), pf)
    return problems
