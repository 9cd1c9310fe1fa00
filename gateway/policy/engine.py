"""Policy decisions: ordered rules, first match wins, deny when nothing matches.

The engine is pure and synchronous: a decision needs no I/O, so it is cheap and testable without
an event loop. Rules are compiled once at load; destinations are indexed by exact host so that
10,000 host-specific rules cost about what 10 do.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config.policy import (
    CallerMatchConfig,
    DestinationMatchConfig,
    ProfileConfig,
    RuleConfig,
)
from gateway.model import Action, Caller, Decision, Destination

# A check returns None when it matches, else a short reason used by `policy explain`.
Check = Callable[[Caller, Destination], str | None]


@functools.lru_cache(maxsize=4096)
def glob_to_regex(pattern: str, segment: str = "/") -> re.Pattern[str]:
    """`*` matches within one segment, `**` across segments; everything else is literal."""
    out = []
    i = 0
    sep = re.escape(segment)
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append(f"[^{sep}]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _string_matcher(patterns: list[str], segment: str) -> Callable[[str | None], bool]:
    exact = {p for p in patterns if "*" not in p}
    globs = [glob_to_regex(p, segment) for p in patterns if "*" in p]

    def match(value: str | None) -> bool:
        if value is None:
            return False
        if value in exact:
            return True
        return any(g.match(value) for g in globs)

    return match


def _host_matcher(patterns: list[str]) -> Callable[[str], bool]:
    exact = {p.lower() for p in patterns if not p.startswith("*.")}
    suffixes = tuple(p[1:].lower() for p in patterns if p.startswith("*."))

    def match(host: str) -> bool:
        return host in exact or (bool(suffixes) and host.endswith(suffixes))

    return match


_MISSING = object()


def _claim_at(claims: dict[str, Any], name: str) -> Any:
    """A claim by name; dots reach into objects (`txn_token.tctx.entry`, `act.sub`)."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _claim_matches(actual: Any, wanted: Any) -> bool:
    wanted_values = _as_list(wanted)
    if isinstance(actual, list):
        return any(w in actual for w in wanted_values)
    if isinstance(actual, str) and " " in actual and isinstance(wanted, str):
        # OAuth `scope` is a space-separated string
        return wanted in actual.split(" ")
    return actual in wanted_values


def compile_caller(m: CallerMatchConfig | None) -> list[Check]:
    checks: list[Check] = []
    if m is None:
        return checks
    if m.methods is not None:
        methods = frozenset(m.methods)
        checks.append(
            lambda c, d: None if c.method.value in methods
            else f"authentication method {c.method.value} not in {sorted(methods)}"
        )
    if m.identity is not None:
        ids = _as_list(m.identity)
        match_id = _string_matcher(ids, "/")
        checks.append(
            lambda c, d: None if match_id(c.identity)
            else f"caller identity {c.identity or '(anonymous)'} does not match {ids}"
        )
    if m.trust_domain is not None:
        tds = frozenset(_as_list(m.trust_domain))
        checks.append(
            lambda c, d: None if c.trust_domain in tds
            else f"trust domain {c.trust_domain or '(none)'} not in {sorted(tds)}"
        )
    if m.proof_of_possession is not None:
        pop = m.proof_of_possession
        checks.append(
            lambda c, d: None if c.proof_of_possession == pop
            else ("credential is not bound to a key" if pop else "credential is key-bound")
        )
    if m.claims:
        wanted = dict(m.claims)

        def claims_check(c: Caller, d: Destination) -> str | None:
            for name, value in wanted.items():
                actual = _claim_at(c.claims, name)
                if actual is _MISSING or not _claim_matches(actual, value):
                    return f"claim {name} does not match"
            return None

        checks.append(claims_check)
    return checks


def compile_destination(m: DestinationMatchConfig | None) -> list[Check]:
    checks: list[Check] = []
    if m is None:
        return checks
    if m.methods is not None:
        methods = frozenset(m.methods)
        checks.append(
            lambda c, d: None if d.method in methods
            else f"method {d.method} not in {sorted(methods)}"
        )
    if m.route is not None:
        routes = frozenset(_as_list(m.route))
        checks.append(
            lambda c, d: None if d.route in routes else f"route {d.route} not in {sorted(routes)}"
        )
    if m.scheme is not None:
        scheme = m.scheme
        checks.append(lambda c, d: None if d.scheme == scheme else f"scheme {d.scheme} != {scheme}")
    if m.host is not None:
        hosts = _as_list(m.host)
        match_host = _host_matcher(hosts)
        checks.append(
            lambda c, d: None if match_host(d.host) else f"host {d.host} does not match {hosts}"
        )
    if m.port is not None:
        ports = frozenset(_as_list(m.port))
        checks.append(lambda c, d: None if d.port in ports else f"port {d.port} not in "
                      f"{sorted(ports)}")
    if m.path_prefix is not None:
        prefix = m.path_prefix
        checks.append(
            lambda c, d: None if d.path.startswith(prefix)
            else f"path {d.path} does not start with {prefix}"
        )
    if m.path is not None:
        pattern = m.path
        rx = glob_to_regex(pattern, "/")
        checks.append(
            lambda c, d: None if rx.match(d.path) else f"path {d.path} does not match {pattern}"
        )
    return checks


@dataclass(frozen=True)
class Rule:
    """A compiled rule: its config, the decision it yields, and its checks in order."""

    config: RuleConfig
    decision: Decision
    checks: tuple[Check, ...]
    source: str  # "file:line", for explain and warnings
    order: int  # position in the merged policy
    exact_hosts: frozenset[str] | None  # set when the rule only applies to these hosts
    exact_identities: frozenset[str] | None  # set when it only applies to these callers

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def is_catch_all(self) -> bool:
        return not self.checks

    def mismatch(self, caller: Caller, dest: Destination) -> str | None:
        for check in self.checks:
            why = check(caller, dest)
            if why is not None:
                return why
        return None


def compile_rule(cfg: RuleConfig, source: str, order: int = 0) -> Rule:
    decision = Decision(
        rule_id=cfg.id,
        action=Action(cfg.action),
        profile=cfg.profile,
        upgrade_tls=cfg.upgrade_tls,
        pass_credentials=cfg.pass_credentials,
        allow_lifetime_extension=cfg.allow_lifetime_extension,
        allow_assurance_upgrade=cfg.allow_assurance_upgrade,
    )
    # Cheap destination checks first: they reject most rules for most requests.
    checks = [*compile_destination(cfg.destination), *compile_caller(cfg.caller)]
    exact_hosts = None
    if cfg.destination and cfg.destination.host is not None:
        hosts = _as_list(cfg.destination.host)
        if not any(h.startswith("*.") for h in hosts):
            exact_hosts = frozenset(h.lower() for h in hosts)
    exact_ids = None
    if cfg.caller and cfg.caller.identity is not None:
        ids = _as_list(cfg.caller.identity)
        if not any("*" in i for i in ids):
            exact_ids = frozenset(ids)
    return Rule(cfg, decision, tuple(checks), source, order, exact_hosts, exact_ids)


NO_MATCH = Decision(rule_id="(no rule matched)", action=Action.DENY)


@dataclass
class Explanation:
    """Why a request got its decision: each rule considered and what it said."""

    decision: Decision
    steps: list[tuple[Rule, str | None]] = field(default_factory=list)


class PolicyEngine:
    """Ordered rules, indexed so that a decision looks only at rules that could match.

    A rule limited to exact hosts is filed under each host; one limited to exact caller
    identities (and no exact host) under each identity; the rest are "wide" and always looked
    at. A request's candidates are its host's rules, its identity's rules and the wide rules,
    merged back into file order, so first-match semantics are unchanged. ``decide`` is pure.
    """

    def __init__(self, rules: list[Rule], profiles: dict[str, ProfileConfig]) -> None:
        self.rules = rules
        self.profiles = profiles
        wide: list[int] = []
        by_host: dict[str, list[int]] = {}
        by_identity: dict[str, list[int]] = {}
        for i, r in enumerate(rules):
            if r.exact_hosts is not None:
                for h in r.exact_hosts:
                    by_host.setdefault(h, []).append(i)
            elif r.exact_identities is not None:
                for ident in r.exact_identities:
                    by_identity.setdefault(ident, []).append(i)
            else:
                wide.append(i)
        # Precomputed merges with the wide rules, so the common case is one list walk.
        self._by_host = {h: sorted(set(idx) | set(wide)) for h, idx in by_host.items()}
        self._by_identity = {k: sorted(set(idx) | set(wide)) for k, idx in by_identity.items()}
        self._by_host_only = by_host
        self._wide = wide

    def candidates(self, host: str, identity: str | None) -> list[int]:
        h = self._by_host.get(host)
        ident = self._by_identity.get(identity) if identity is not None else None
        if h is None:
            return ident if ident is not None else self._wide
        if ident is None:
            return h
        return sorted(set(self._by_host_only[host]) | set(ident))

    def decide(self, caller: Caller, dest: Destination) -> Decision:
        rules = self.rules
        for i in self.candidates(dest.host, caller.identity):
            rule = rules[i]
            for check in rule.checks:
                if check(caller, dest) is not None:
                    break
            else:
                return rule.decision
        return NO_MATCH

    def explain(self, caller: Caller, dest: Destination) -> Explanation:
        """Walk every rule in order (not just the indexed ones) and say why each did or not."""
        out = Explanation(NO_MATCH)
        for rule in self.rules:
            why = rule.mismatch(caller, dest)
            out.steps.append((rule, why))
            if why is None:
                out.decision = rule.decision
                break
        return out
