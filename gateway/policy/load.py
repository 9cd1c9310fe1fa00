"""Load policy files, merge them in order, check references, and compile the engine."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydantic

from gateway.config.policy import PolicyFileConfig, ProfileConfig
from gateway.config.source import (
    ConfigError,
    Document,
    Problem,
    load_yaml,
    validation_problems,
)
from gateway.policy.engine import PolicyEngine, Rule, compile_rule


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


def _equivalent(a: Rule, b: Rule) -> bool:
    return a.config.caller == b.config.caller and a.config.destination == b.config.destination


def load_policy(files: Iterable[Path], ctx: PolicyContext) -> Policy:
    """Read every file, then report every problem at once; raise ConfigError if any is fatal."""
    problems: list[Problem] = []
    warnings: list[Problem] = []
    digest = hashlib.sha256()
    rules: list[Rule] = []
    rule_docs: list[tuple[Document, int]] = []
    profiles: dict[str, ProfileConfig] = {}
    profile_where: dict[str, str] = {}
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
            if prof.exchange.type == "issuer" and not ctx.has_issuer:
                problems.append(
                    doc.problem(("profiles", name, "exchange", "type"),
                                "type issuer needs an `issuer` section in the gateway config")
                )
        for i, rc in enumerate(pf.rules):
            rules.append(compile_rule(rc, f"{doc.display}:{doc.line_of(('rules', i))}"))
            rule_docs.append((doc, i))

    seen_ids: dict[str, str] = {}
    catch_all_at: Rule | None = None
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
                if r not in ctx.routes and r != "forward-proxy":
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
            for earlier in rules[: rules.index(rule)]:
                if _equivalent(earlier, rule):
                    warnings.append(doc.problem(("rules", i), f"unreachable: rule {earlier.id!r} "
                                                f"({earlier.source}) matches the same requests"))
                    break
        if rule.is_catch_all and catch_all_at is None:
            catch_all_at = rule

    if not rules:
        problems.append(Problem(", ".join(str(p) for p in paths), None, "rules",
                                "no rules: a policy needs at least a final catch-all rule"))
    elif not rules[-1].is_catch_all:
        doc, i = rule_docs[-1]
        problems.append(doc.problem(("rules", i), "the last rule must be an explicit catch-all "
                                    "(no caller or destination conditions), e.g. "
                                    "`{id: default-deny, action: deny}`"))
    if problems:
        raise ConfigError(problems)
    return Policy(
        engine=PolicyEngine(rules, profiles),
        digest="sha256:" + digest.hexdigest(),
        files=paths,
        warnings=tuple(warnings),
    )
