"""Policy matching, ordering, indexing and guard rails (no sockets)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from yarl import URL

from gateway.config.source import ConfigError
from gateway.errors import PolicyError, Reason
from gateway.model import ANONYMOUS, Action, AuthnMethod, Caller, Credential, Decision, Destination
from gateway.policy import guards
from gateway.policy.engine import glob_to_regex
from gateway.policy.load import PolicyContext, load_policy

CTX = PolicyContext(routes=frozenset({"api", "other"}), trust_domains=frozenset({"example.org"}),
                    has_issuer=True)


def policy(tmp_path: Path, text: str, name: str = "p.yaml"):
    f = tmp_path / name
    f.write_text(textwrap.dedent(text))
    return load_policy([f], CTX)


def caller(identity: str = "spiffe://example.org/ns/shop/sa/api", method=AuthnMethod.MTLS,
           pop: bool = True, claims=None, expires_at: float | None = 2000.0) -> Caller:
    return Caller(identity=identity, trust_domain=identity.split("/")[2], method=method,
                  proof_of_possession=pop, expires_at=expires_at, claims=claims or {})


def dest(url: str = "https://api.example.com/v1/orders", method: str = "GET",
         route: str = "api") -> Destination:
    return Destination(URL(url), method, route, "reverse")


RULES = """
profiles:
  tok:
    exchange: {type: issuer}
    inject: [{type: bearer}]
rules:
  - id: shop-reads
    caller: {identity: "spiffe://example.org/ns/shop/sa/*", methods: [mtls, wit]}
    destination: {host: api.example.com, path: "/v1/**", methods: [GET]}
    action: exchange
    profile: tok
  - id: admins-anything
    caller: {identity: "spiffe://example.org/ns/admin/**", claims: {group: [ops, sre]}}
    action: forward
  - id: wildcard-host
    destination: {host: "*.internal.example", port: 8443}
    action: forward
  - id: anonymous-health
    caller: {methods: [none]}
    destination: {path_prefix: /healthz}
    action: forward
  - id: default-deny
    action: deny
"""


@pytest.mark.parametrize(
    ("c", "d", "rule"),
    [
        (caller(), dest(), "shop-reads"),
        (caller(), dest(method="POST"), "default-deny"),
        (caller(method=AuthnMethod.BEARER, pop=False), dest(), "default-deny"),
        (caller("spiffe://example.org/ns/shop/sa/api/extra"), dest(), "default-deny"),
        (caller(), dest("https://api.example.com/v2/x"), "default-deny"),
        (caller(), dest("https://evil.example.com/v1/orders"), "default-deny"),
        (caller("spiffe://example.org/ns/admin/sa/x/y", claims={"group": "sre"}), dest(),
         "admins-anything"),
        (caller("spiffe://example.org/ns/admin/sa/x", claims={"group": "dev"}), dest(),
         "default-deny"),
        (caller("spiffe://example.org/ns/admin/sa/x", claims={"group": ["dev", "ops"]}), dest(),
         "admins-anything"),
        (caller(), dest("https://a.b.internal.example:8443/"), "wildcard-host"),
        (caller(), dest("https://internal.example:8443/"), "default-deny"),
        (caller(), dest("https://a.internal.example:443/"), "default-deny"),
        (ANONYMOUS, dest("http://x/healthz"), "anonymous-health"),
        (caller(), dest("http://x/healthz"), "default-deny"),
        (ANONYMOUS, dest(), "default-deny"),
    ],
)
def test_first_match_wins(tmp_path: Path, c: Caller, d: Destination, rule: str) -> None:
    p = policy(tmp_path, RULES)
    assert p.engine.decide(c, d).rule_id == rule
    assert p.engine.explain(c, d).decision.rule_id == rule


def test_identity_glob_is_segment_aware() -> None:
    rx = glob_to_regex("spiffe://td/ns/*/sa/api")
    assert rx.match("spiffe://td/ns/x/sa/api")
    assert not rx.match("spiffe://td/ns/x/y/sa/api")
    assert not rx.match("spiffe://td/ns/x/sa/api2")
    assert glob_to_regex("spiffe://td/**").match("spiffe://td/a/b/c")
    assert not glob_to_regex("spiffe://td/**").match("spiffe://td2/a")
    assert not glob_to_regex("spiffe://td/a.b").match("spiffe://td/aXb")  # dots are literal


def test_explain_says_why_earlier_rules_missed(tmp_path: Path) -> None:
    p = policy(tmp_path, RULES)
    ex = p.engine.explain(caller(), dest(method="DELETE"))
    assert ex.decision.rule_id == "default-deny"
    reasons = {rule.id: why for rule, why in ex.steps}
    assert "method DELETE" in reasons["shop-reads"]
    assert "does not match" in reasons["admins-anything"]
    assert reasons["default-deny"] is None


def test_host_index_agrees_with_linear_scan(tmp_path: Path) -> None:
    rules = "\n".join(
        f"  - id: r{i}\n    destination: {{host: h{i}.example, methods: [GET]}}\n"
        f"    action: forward" if i % 3 else
        f"  - id: r{i}\n    caller: {{identity: spiffe://example.org/ns/shop/sa/api}}\n"
        f"    destination: {{path_prefix: /g{i}}}\n    action: deny"
        for i in range(300))
    text = f"rules:\n{rules}\n  - id: generic\n    destination: {{path_prefix: /g}}\n" \
           "    action: forward\n  - id: default-deny\n    action: deny\n"
    p = policy(tmp_path, text)
    for host in ("h0.example", "h150.example", "h298.example", "nope.example"):
        for path in ("/x", "/g", "/g3", "/g297"):
            for m in ("GET", "POST"):
                for c in (caller(), caller("spiffe://example.org/ns/other/sa/x"), ANONYMOUS):
                    d = dest(f"https://{host}{path}", method=m)
                    assert p.engine.decide(c, d) == p.engine.explain(c, d).decision


def test_catch_all_is_mandatory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="last rule must be an explicit catch-all"):
        policy(tmp_path, "rules:\n  - id: a\n    destination: {host: x}\n    action: forward\n")
    with pytest.raises(ConfigError, match="no rules"):
        policy(tmp_path, "rules: []\n")


def test_references_and_shadowing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        policy(tmp_path, """
        rules:
          - id: a
            caller: {trust_domain: elsewhere.org}
            destination: {route: nope}
            action: exchange
            profile: ghost
          - {id: z, action: deny}
        """)
    text = str(exc.value)
    assert "unknown trust domain 'elsewhere.org'" in text
    assert "unknown route 'nope'" in text
    assert "unknown profile 'ghost'" in text
    p = policy(tmp_path, """
    rules:
      - {id: a, destination: {host: x}, action: forward}
      - {id: b, destination: {host: x}, action: deny}
      - {id: all, action: deny}
      - {id: after, destination: {host: y}, action: forward}
      - {id: last, action: deny}
    """)
    warnings = "\n".join(str(w) for w in p.warnings)
    assert "rules[1]: unreachable: rule 'a'" in warnings
    assert "rules[3]: unreachable: rule 'all'" in warnings


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("{destination: {path: /v1/**}}", "{destination: {path: /v1/x/*}}", True),
        ("{destination: {path: /v1/*}}", "{destination: {path: /v1/**}}", False),
        ("{destination: {path_prefix: /api}}", "{destination: {path_prefix: /api/v2}}", True),
        ("{destination: {methods: [GET, POST]}}", "{destination: {methods: [GET]}}", True),
        ("{destination: {methods: [GET]}}", "{destination: {methods: [GET, POST]}}", False),
        ("{destination: {host: '*.ex.com'}}", "{destination: {host: a.ex.com, port: 1}}", True),
        ("{destination: {host: a.ex.com}}", "{destination: {host: '*.ex.com'}}", False),
        ("{caller: {identity: 'spiffe://t/ns/*/sa/x'}}",
         "{caller: {identity: spiffe://t/ns/a/sa/x}, destination: {route: api}}", True),
        ("{caller: {identity: spiffe://t/ns/a/sa/x}}",
         "{caller: {identity: 'spiffe://t/ns/*/sa/x'}}", False),
        ("{caller: {methods: [mtls]}}", "{destination: {route: api}}", False),
        ("{caller: {claims: {g: ops}}}", "{caller: {claims: {g: ops, h: 1}}}", True),
    ],
)
def test_shadowing_is_detected_without_false_alarms(
    tmp_path: Path, earlier: str, later: str, shadowed: bool
) -> None:
    text = (f"rules:\n  - {{id: a, action: forward, {earlier[1:-1]}}}\n"
            f"  - {{id: b, action: deny, {later[1:-1]}}}\n  - {{id: z, action: deny}}\n")
    p = policy(tmp_path, text)
    hit = any("rules[1]: unreachable" in str(w) for w in p.warnings)
    assert hit == shadowed


def test_policy_files_merge_in_order(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules:\n  - {id: first, destination: {host: h}, "
                                     "action: forward}\n")
    (tmp_path / "b.yaml").write_text("rules:\n  - {id: catch, action: deny}\n")
    p = load_policy([tmp_path / "a.yaml", tmp_path / "b.yaml"], CTX)
    assert [r.id for r in p.engine.rules] == ["first", "catch"]
    q = load_policy([tmp_path / "a.yaml", tmp_path / "b.yaml"], CTX)
    assert p.digest == q.digest
    (tmp_path / "b.yaml").write_text("rules:\n  - {id: catch, action: deny}  # changed\n")
    assert load_policy([tmp_path / "a.yaml", tmp_path / "b.yaml"], CTX).digest != p.digest


def test_yaml_booleans_and_typos_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        policy(tmp_path, """
        rules:
          - id: no
            action: forward
            upgrade_tls: "yes"
            destination: {hots: x}
          - {id: all, action: deny}
        """)
    text = str(exc.value)
    assert "p.yaml:3: rules[0].id" in text  # `no` is a boolean, not a string
    assert "p.yaml:5: rules[0].upgrade_tls" in text
    assert "p.yaml:6: rules[0].destination.hots: unknown key" in text


def cred(expires_at: float, pop: bool = False) -> Credential:
    return Credential("t", "Bearer", "urn:x", expires_at, pop, "jti", "iss")


def test_guard_lifetime_extension() -> None:
    d = Decision("r", Action.EXCHANGE, "p")
    c = caller(expires_at=1000.0)
    guards.check_credential(c, d, cred(1000.0))
    with pytest.raises(PolicyError) as exc:
        guards.check_credential(c, d, cred(1100.0))
    assert exc.value.reason is Reason.POLICY_LIFETIME_EXTENSION
    guards.check_credential(c, Decision("r", Action.EXCHANGE, "p",
                                        allow_lifetime_extension=True), cred(5000.0))
    assert guards.max_lifetime_for(c, d, 900.0, 300.0) == 100.0
    assert guards.max_lifetime_for(c, Decision("r", Action.EXCHANGE, "p",
                                               allow_lifetime_extension=True), 900.0, 300) == 300


def test_guard_assurance_upgrade() -> None:
    d = Decision("r", Action.EXCHANGE, "p")
    bearer = caller(method=AuthnMethod.BEARER, pop=False)
    with pytest.raises(PolicyError) as exc:
        guards.check_credential(bearer, d, cred(1000.0, pop=True))
    assert exc.value.reason is Reason.POLICY_ASSURANCE_UPGRADE
    guards.check_credential(bearer, Decision("r", Action.EXCHANGE, "p",
                                             allow_assurance_upgrade=True), cred(1000.0, True))
    guards.check_credential(caller(), d, cred(1000.0, pop=True))  # pop in, pop out: fine


def test_profile_includes_and_injector_fit(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        policy(tmp_path, """
        profiles:
          a: {exchange: {type: issuer, token: txn_token, scope: s}, inject: [{type: txn_token}],
              include: [b]}
          b: {exchange: {type: issuer, token: wit}, inject: [{type: wimse}], include: [a]}
          c: {exchange: {type: issuer}, inject: [{type: bearer}], include: [ghost, c]}
        rules: [{id: z, action: deny}]
        """)
    text = str(exc.value)
    assert "p.yaml:4: profiles.a.include[0]: profile 'b' includes others itself" in text
    assert "unknown or self-included profile 'ghost'" in text
    assert "unknown or self-included profile 'c'" in text
    with pytest.raises(ConfigError, match="inject mtls needs a certificate"):
        policy(tmp_path, """
        profiles:
          a: {exchange: {type: issuer}, inject: [{type: mtls}]}
        rules: [{id: z, action: deny}]
        """)
    with pytest.raises(ConfigError, match="an unsigned payload is accepted by S3 only"):
        policy(tmp_path, """
        profiles:
          a: {exchange: {type: aws, role_arn: "arn:aws:iam::123456789012:role/x"},
              inject: [{type: aws_sigv4, service: sqs, payload: unsigned}]}
        rules: [{id: z, action: deny}]
        """)
