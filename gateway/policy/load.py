"""Load policy files, merge them in order, check references, and compile the engine."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic

from gateway.config.policy import PolicyFileConfig, ProfileConfig
from gateway.config.source import (
    ConfigError,
    Document,
    Problem,
    load_yaml,
    validation_problems,
)
from gateway.policy.engine import PolicyEngine, Rule, compile_rule, glob_to_regex


@dataclass(frozen=True)
class Policy:
    """A loaded, valid policy: the engine, its digest, and what `check` should warn about."""

    engine: PolicyEngine
    digest: str
    files: tuple[Path, ...]
    warnings: tuple[Problem, ...]

    @property
    def profiles(self) -> dict[str, ProfileConfig]:
        return self.engine.profiles


@dataclass(frozen=True)
class PolicyContext:
    """What the policy may refer to, from the gateway config."""

    routes: frozenset[str]
    trust_domains: frozenset[str]
    has_issuer: bool
    token_services: frozenset[str] = frozenset()


def _set(v: object) -> set[object] | None:
    if v is None:
        return None
    return set(v) if isinstance(v, list) else {v}


def _covers_values(a: object, b: object) -> bool:
    """A set-valued condition ``a`` admits everything ``b`` admits (None admits everything)."""
    sa, sb = _set(a), _set(b)
    return sa is None or (sb is not None and sb <= sa)


def _covers_patterns(a: object, b: object, segment: str) -> bool:
    """Glob list ``a`` admits every string ``b`` admits (each of b's patterns, read literally,
    is matched by one of a's: ``/v1/**`` covers ``/v1/x/*``)."""
    sa, sb = _set(a), _set(b)
    if sa is None:
        return True
    if sb is None:
        return False
    rxs = [glob_to_regex(str(p), segment) for p in sa]
    # Read b's wildcards as stand-ins a literal cannot match: `**` spans a separator (only a's
    # `**` covers it), `*` is one unknown character within a segment.
    def literal(p: object) -> str:
        return str(p).replace("**", f"\0{segment}\0").replace("*", "\0")
    return all(any(rx.match(literal(p)) for rx in rxs) for p in sb)


def _covers_hosts(a: object, b: object) -> bool:
    sa, sb = _set(a), _set(b)
    if sa is None:
        return True
    if sb is None:
        return False
    suffixes = tuple(str(h)[1:] for h in sa if str(h).startswith("*."))
    return all(h in sa or (suffixes and str(h).lstrip("*").endswith(suffixes)) for h in sb)


def _shadows(a: Rule, b: Rule) -> bool:
    """Rule ``a`` matches every request ``b`` matches, so ``b`` (later) can never fire.

    Conservative: answers True only when it can tell from the conditions alone.
    """
    ca, cb = a.config.caller, b.config.caller
    if ca is not None:
        if cb is None:
            return False
        if not (_covers_values(ca.methods, cb.methods)
                and _covers_patterns(ca.identity, cb.identity, "/")
                and _covers_values(ca.trust_domain, cb.trust_domain)
                and (ca.proof_of_possession is None
                     or ca.proof_of_possession == cb.proof_of_possession)
                and all((cb.claims or {}).get(k) == v for k, v in (ca.claims or {}).items())):
            return False
    da, db = a.config.destination, b.config.destination
    if da is None:
        return True
    if db is None:
        return False
    prefix_ok = da.path_prefix is None or (
        db.path_prefix is not None and db.path_prefix.startswith(da.path_prefix))
    path_ok = da.path is None or (db.path is not None and _covers_patterns(da.path, db.path, "/"))
    return bool(
        _covers_values(da.methods, db.methods)
        and _covers_values(da.route, db.route)
        and _covers_values(da.scheme, db.scheme)
        and _covers_values(da.port, db.port)
        and _covers_hosts(da.host, db.host)
        and prefix_ok
        and path_ok
    )


class _ShadowIndex:
    """Finds an earlier rule that shadows a new one without comparing every pair.

    A rule limited to exact hosts can only be shadowed by a rule without exact hosts or one
    sharing a host; likewise for exact caller identities. Only the remaining "wide" rules are
    compared one by one, within a budget, so a 10,000-rule policy still loads in seconds.
    """

    BUDGET = 2_000_000

    def __init__(self) -> None:
        self.by_host: dict[str, list[Rule]] = {}
        self.by_identity: dict[str, list[Rule]] = {}  # host-generic rules with exact identities
        self.wide: list[Rule] = []  # host-generic rules with glob or no identity
        self.comparisons = 0
        self.exhausted = False

    def add(self, rule: Rule) -> None:
        if rule.exact_hosts is not None:
            for h in rule.exact_hosts:
                self.by_host.setdefault(h, []).append(rule)
            return
        ids = rule.exact_identities
        if ids is None:
            self.wide.append(rule)
        else:
            for i in ids:
                self.by_identity.setdefault(i, []).append(rule)

    def find_shadow(self, rule: Rule) -> Rule | None:
        candidates: list[Rule] = []
        if rule.exact_hosts is not None:
            for h in rule.exact_hosts:
                candidates += self.by_host.get(h, ())
        ids = rule.exact_identities
        if ids is not None:
            for i in ids:
                candidates += self.by_identity.get(i, ())
        candidates += self.wide
        best: Rule | None = None
        for a in candidates:
            if self.comparisons >= self.BUDGET:
                self.exhausted = True
                break
            self.comparisons += 1
            if _shadows(a, rule) and (best is None or a.order < best.order):
                best = a
        return best


def load_policy(files: Iterable[Path], ctx: PolicyContext) -> Policy:
    """Read every file, then report every problem at once; raise ConfigError if any is fatal."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    digest = hashlib.sha256()
    rules: list[Rule] = []
    rule_docs: list[tuple[Document, int]] = []
    profiles: dict[str, ProfileConfig] = {}
    profile_where: dict[str, str] = {}
    profile_doc: dict[str, Any] = {}
    paths = tuple(Path(f) for f in files)

    for path in paths:
        try:
            doc = load_yaml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), "expected a mapping with `profiles` and `rules`"))
            continue
        try:
            pf = PolicyFileConfig.model_validate(doc.data)
        except pydantic.ValidationError as exc:
            problems.extend(validation_problems(doc, exc))
            continue
        for name, prof in pf.profiles.items():
            where = f"{doc.display}:{doc.line_of(('profiles', name))}"
            if name in profiles:
                problems.append(
                    doc.problem(("profiles", name),
                                f"profile defined twice (also {profile_where[name]})")
                )
                continue
            profiles[name] = prof
            profile_where[name] = where
            profile_doc[name] = doc
            ex = prof.exchange
            if (ex.type == "issuer" or getattr(ex, "subject", None) == "gateway_token"
                    or getattr(ex, "client_id", None) == "caller_identity") and not ctx.has_issuer:
                problems.append(
                    doc.problem(("profiles", name, "exchange", "type"),
                                "this exchange signs with the gateway's key: configure `issuer` "
                                "in the gateway config")
                )
            sts = getattr(ex, "sts", None)
            if sts is not None and sts not in ctx.token_services:
                problems.append(doc.problem(("profiles", name, "exchange", "sts"),
                                            f"unknown token service {sts!r}"))
        for i, rc in enumerate(pf.rules):
            rules.append(compile_rule(rc, f"{doc.display}:{doc.line_of(('rules', i))}",
                                      len(rules)))
            rule_docs.append((doc, i))

    for name, prof in profiles.items():
        for j, inc in enumerate(prof.include):
            where = ("profiles", name, "include", j)
            if inc == name or inc not in profiles:
                problems.append(profile_doc[name].problem(
                    where, f"unknown or self-included profile {inc!r}"))
            elif profiles[inc].include:
                problems.append(profile_doc[name].problem(
                    where, f"profile {inc!r} includes others itself; includes are one level "
                    "deep"))

    seen_ids: dict[str, str] = {}
    catch_all_at: Rule | None = None
    shadow_index = _ShadowIndex()
    for rule, (doc, i) in zip(rules, rule_docs, strict=True):
        rc = rule.config
        if rc.id in seen_ids:
            problems.append(doc.problem(("rules", i, "id"), f"duplicate rule id {rc.id!r} "
                                        f"(first at {seen_ids[rc.id]})"))
        seen_ids.setdefault(rc.id, rule.source)
        if rc.profile and rc.profile not in profiles:
            problems.append(doc.problem(("rules", i, "profile"), f"unknown profile {rc.profile!r}"))
        dest = rc.destination
        if dest and dest.route is not None:
            for r in [dest.route] if isinstance(dest.route, str) else dest.route:
                if r not in ctx.routes and r not in ("forward-proxy", "token-endpoint"):
                    problems.append(doc.problem(("rules", i, "destination", "route"),
                                                f"unknown route {r!r}"))
        caller = rc.caller
        if caller and caller.trust_domain is not None:
            tds = caller.trust_domain
            tds = [tds] if isinstance(tds, str) else tds
            for td in tds:
                if td not in ctx.trust_domains:
                    problems.append(doc.problem(("rules", i, "caller", "trust_domain"),
                                                f"unknown trust domain {td!r}"))
        if rc.allow_lifetime_extension:
            warnings.append(doc.problem(("rules", i, "allow_lifetime_extension"),
                                        "guard rail off: credentials may outlive the caller's"))
        if rc.allow_assurance_upgrade:
            warnings.append(doc.problem(("rules", i, "allow_assurance_upgrade"),
                                        "guard rail off: bearer callers may get key-bound "
                                        "credentials"))
        if catch_all_at is not None:
            warnings.append(doc.problem(("rules", i), f"unreachable: rule {catch_all_at.id!r} "
                                        f"({catch_all_at.source}) matches everything first"))
        else:
            earlier = shadow_index.find_shadow(rule)
            if earlier is not None:
                warnings.append(doc.problem(("rules", i), f"unreachable: rule {earlier.id!r} "
                                            f"({earlier.source}) matches every request this "
                                            "one does"))
            shadow_index.add(rule)
        if rule.is_catch_all and catch_all_at is None:
            catch_all_at = rule

    if not rules and not problems:
        problems.append(Problem(", ".join(str(p) for p in paths), None, "rules",
                                "no rules: a policy needs at least a final catch-all rule"))
    elif rules and not rules[-1].is_catch_all:
        doc, i = rule_docs[-1]
        problems.append(doc.problem(("rules", i), "the last rule must be an explicit catch-all "
                                    "(no caller or destination conditions), e.g. "
                                    "`{id: default-deny, action: deny}`"))
    if shadow_index.exhausted:
        warnings.append(Problem(str(paths[0]) if paths else "policy", None, "rules",
                                f"shadowed-rule analysis stopped after "
                                f"{_ShadowIndex.BUDGET:,} comparisons; some unreachable rules "
                                "may not be reported"))
    if problems:
        raise ConfigError(problems)
    return Policy(
        engine=PolicyEngine(rules, profiles),
        digest="sha256:" + digest.hexdigest(),
        files=paths,
        warnings=tuple(warnings),
    )
