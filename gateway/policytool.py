"""``wimse-gateway policy explain`` and ``policy test``: policy as something operators can review.

Both build the same Caller and Destination values the proxy builds, and ask the same engine, so
what they print is what the gateway does.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field
from yarl import URL

from gateway.authn.identifier import parse_workload_id
from gateway.config.models import Strict
from gateway.config.source import ConfigError, load_yaml, validation_problems
from gateway.model import ANONYMOUS, AuthnMethod, Caller, Decision, Destination
from gateway.proxy.routes import FORWARD_ROUTE
from gateway.runtime import Runtime


class CallerSpec(Strict):
    identity: str | None = Field(None, description="Workload identifier; omit for anonymous")
    method: Literal["mtls", "wit", "httpsig", "dpop", "bearer", "none"] | None = None
    proof_of_possession: bool | None = Field(
        None, description="default: true for mtls/wit/httpsig/dpop, false for bearer")
    claims: dict[str, Any] = Field(default_factory=dict)


class RequestSpec(Strict):
    method: str = "GET"
    url: str = Field(description="The destination URL (upstream), e.g. https://api.example/v1")
    route: str | None = Field(None, description="default: the route whose upstream serves url, "
                              "else forward-proxy")


class ExpectSpec(Strict):
    decision: Literal["deny", "forward", "exchange"]
    rule: str | None = None
    profile: str | None = None


class PolicyTestCase(Strict):
    name: str
    caller: CallerSpec = CallerSpec()
    request: RequestSpec
    expect: ExpectSpec


class PolicyTestFile(Strict):
    schema_: str | None = Field(None, alias="$schema")
    tests: list[PolicyTestCase] = Field(min_length=1)


_POP_BY_DEFAULT = {"mtls", "wit", "httpsig", "dpop"}


def make_caller(spec: CallerSpec) -> Caller:
    if spec.identity is None:
        return ANONYMOUS
    try:
        wid = parse_workload_id(spec.identity)
    except ValueError as exc:
        raise ValueError(f"caller identity: {exc}") from None
    method = spec.method or "mtls"
    pop = spec.proof_of_possession
    if pop is None:
        pop = method in _POP_BY_DEFAULT
    return Caller(identity=wid.uri, trust_domain=wid.trust_domain, method=AuthnMethod(method),
                  proof_of_possession=pop, expires_at=None,
                  claims={"sub": wid.uri, **spec.claims})


def make_destination(rt: Runtime, spec: RequestSpec) -> Destination:
    url = URL(spec.url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("request url must be an absolute http(s) URL")
    route = spec.route
    mode = "reverse"
    if route is None:
        for r in rt.routes:
            up = URL(r.upstream)
            if up.origin() == url.origin() and url.path.startswith(up.path.rstrip("/") or "/"):
                route = r.name
                break
        else:
            route, mode = FORWARD_ROUTE, "forward"
    elif route == FORWARD_ROUTE:
        mode = "forward"
    return Destination(url=url, method=spec.method.upper(), route=route, mode=mode)


def describe_decision(rt: Runtime, decision: Decision) -> list[str]:
    lines = [f"decision: {decision.action.value}"
             + (f" with profile {decision.profile}" if decision.profile else "")
             + f" (rule {decision.rule_id})"]
    if decision.profile:
        prof = rt.policy.profiles[decision.profile]
        for name in [*prof.include, decision.profile]:
            step = rt.policy.profiles[name]
            ex = step.exchange.model_dump(exclude_none=True)
            kind = ex.pop("type")
            details = ", ".join(f"{k}={v}" for k, v in ex.items() if v not in ([], None))
            suffix = f"   [from included profile {name}]" if name != decision.profile else ""
            lines.append(f"  exchange: {kind} ({details}){suffix}")
            lines.append("  inject:   " + ", ".join(
                i.type + (f" {i.name}" if getattr(i, "name", None) else "")
                for i in step.inject) + suffix)
        if prof.on_behalf_of:
            lines.append("  on behalf of the caller (act claim)")
    if decision.upgrade_tls:
        lines.append("  upstream leg upgraded to https")
    if decision.pass_credentials:
        lines.append("  caller's own credential headers are passed on (not stripped)")
    rails = []
    rails.append("lifetime extension ALLOWED" if decision.allow_lifetime_extension
                 else "no lifetime extension")
    rails.append("assurance upgrade ALLOWED" if decision.allow_assurance_upgrade
                 else "no assurance upgrade")
    if decision.profile:
        lines.append("  guard rails: " + ", ".join(rails))
    return lines


def explain(rt: Runtime, caller: Caller, dest: Destination) -> str:
    ex = rt.policy.engine.explain(caller, dest)
    who = (f"{caller.identity} via {caller.method.value}"
           + (" (key-bound)" if caller.proof_of_possession else " (bearer)")
           if caller.authenticated else "anonymous (no credential)")
    out = [f"request: {dest.method} {dest.url} (route {dest.route})", f"caller:  {who}",
           f"policy:  {rt.policy.digest}", ""]
    width = max((len(r.id) for r, _ in ex.steps), default=0)
    for i, (rule, why) in enumerate(ex.steps, 1):
        verdict = "MATCH" if why is None else f"no: {why}"
        out.append(f"  {i:>3}. {rule.id:<{width}}  {verdict}    [{rule.source}]")
    if not ex.steps or ex.steps[-1][1] is not None:
        out.append("  (no rule matched: denied)")
    out.append("")
    out += describe_decision(rt, ex.decision)
    if ex.decision.action.value == "deny" and not caller.authenticated:
        out.append("  the gateway answers 401 authn.missing (the caller is anonymous)")
    return "\n".join(out)


@dataclass
class TestResult:
    name: str
    ok: bool
    diff: list[str]


def load_tests(path: Path) -> PolicyTestFile:
    doc = load_yaml(path)
    try:
        return PolicyTestFile.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        raise ConfigError(validation_problems(doc, exc)) from None


def run_tests(rt: Runtime, tests: PolicyTestFile) -> list[TestResult]:
    results = []
    for case in tests.tests:
        try:
            caller = make_caller(case.caller)
            dest = make_destination(rt, case.request)
        except ValueError as exc:
            results.append(TestResult(case.name, False, [f"invalid test: {exc}"]))
            continue
        d = rt.policy.engine.decide(caller, dest)
        diff = []
        if d.action.value != case.expect.decision:
            diff.append(f"decision: expected {case.expect.decision}, got {d.action.value}")
        if case.expect.rule is not None and d.rule_id != case.expect.rule:
            diff.append(f"rule:     expected {case.expect.rule}, got {d.rule_id}")
        if case.expect.profile is not None and d.profile != case.expect.profile:
            diff.append(f"profile:  expected {case.expect.profile}, got {d.profile}")
        if diff:
            why = explain(rt, caller, dest)
            diff.append("explain:\n" + textwrap.indent(why, "    "))
        results.append(TestResult(case.name, not diff, diff))
    return results
