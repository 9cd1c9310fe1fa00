"""The shipped examples: configs pass `check`, policies pass their own `policy test` files,
schemas are current, and `policy explain` says what the engine does."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.ca import CertificateAuthority, Issued
from gateway.keys import load_or_create_key

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "gateway.cli"]
CERT_KEYS = {"cert", "client_ca", "x509_bundle", "ca", "client_cert"}
KEY_KEYS = {"key", "client_key", "file"}


def _materialise(cfg: Path, ca: CertificateAuthority) -> None:
    """Create every certificate and key file the config names (the platform's job in real life)."""
    data = yaml.safe_load(cfg.read_text())
    leaf = ca.issue_server(["localhost"])
    issuing = ca.intermediate("prod.example.com")
    issuing_pem = issuing.cert_pem()
    issuing_key = Issued(issuing.cert, issuing.key).key_pem()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                values = v if isinstance(v, list) else [v]
                for item in values:
                    if isinstance(item, str) and k in CERT_KEYS | KEY_KEYS:
                        p = (cfg.parent / item).resolve()
                        p.parent.mkdir(parents=True, exist_ok=True)
                        if "issuing-ca" in p.name:  # issuer.ca: a real intermediate
                            p.write_bytes(issuing_pem if k == "cert" else issuing_key)
                        elif k in CERT_KEYS:
                            p.write_bytes(leaf.cert_pem() if k in ("cert", "client_cert")
                                          else ca.cert_pem())
                        elif k == "file":
                            load_or_create_key(p)
                        else:
                            p.write_bytes(leaf.key_pem())
                walk(v)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("examples")
    for sub in ("config", "policies", "schemas"):
        shutil.copytree(ROOT / sub, d / sub)
    ca = CertificateAuthority.create("prod.example.com")
    for cfg in (d / "config").glob("*.yaml"):
        _materialise(cfg, ca)
    return d


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("name", ["gateway.yaml", "egress.yaml"])
def test_example_configs_pass_check(tree: Path, name: str) -> None:
    out = run("check", "-c", f"config/{name}", cwd=tree)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok:"), out.stdout  # and no warnings


@pytest.mark.parametrize(("config", "tests"), [("gateway.yaml", "sidecar.yaml"),
                                                ("egress.yaml", "egress.yaml")])
def test_example_policy_tests_pass(tree: Path, config: str, tests: str) -> None:
    out = run("policy", "test", "-c", f"config/{config}", f"policies/tests/{tests}", cwd=tree)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout and "FAIL" not in out.stdout


def test_policy_test_failure_shows_a_diff(tree: Path) -> None:
    bad = tree / "wrong.yaml"
    bad.write_text(
        "tests:\n"
        "  - name: cart creates payments\n"
        "    caller: {identity: spiffe://prod.example.com/ns/shop/sa/cart}\n"
        "    request: {method: POST, url: https://payments.prod.example.com/v2/payments}\n"
        "    expect: {decision: exchange, rule: checkout-creates-payments}\n")
    out = run("policy", "test", "-c", "config/egress.yaml", str(bad), cwd=tree)
    assert out.returncode == 1
    assert "FAIL  wrong.yaml: cart creates payments" in out.stdout
    assert "decision: expected exchange, got deny" in out.stdout
    assert "rule:     expected checkout-creates-payments, got default-deny" in out.stdout
    assert "checkout-creates-payments  no: caller identity" in out.stdout
    assert "0 passed, 1 failed" in out.stdout


def test_policy_explain_names_the_rule_and_the_misses(tree: Path) -> None:
    out = run("policy", "explain", "-c", "config/egress.yaml",
              "--caller", "spiffe://prod.example.com/ns/shop/sa/checkout", "--method", "POST",
              "--url", "https://payments.prod.example.com/v2/payments", cwd=tree)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "route payments" in text
    assert "shop-to-orders" in text and "no: route payments not in ['orders']" in text
    assert "checkout-creates-payments  MATCH" in text
    assert "decision: exchange with profile payments-token" in text
    assert "inject:   header X-Payments-Token" in text
    assert "no lifetime extension, no assurance upgrade" in text
    anon = run("policy", "explain", "-c", "config/egress.yaml",
               "--url", "https://orders.prod.example.com/", cwd=tree)
    assert "anonymous" in anon.stdout and "401 authn.missing" in anon.stdout


def test_guard_rail_flags_are_reported_by_check(tree: Path) -> None:
    p = tree / "policies" / "egress-namespace.yaml"
    original = p.read_text()
    try:
        p.write_text(original.replace("    profile: orders-token\n",
                                      "    profile: orders-token\n"
                                      "    allow_lifetime_extension: true\n", 1))
        out = run("check", "-c", "config/egress.yaml", cwd=tree)
        assert out.returncode == 0
        assert "warning:" in out.stdout and "allow_lifetime_extension" in out.stdout
        assert "guard rail off" in out.stdout
    finally:
        p.write_text(original)


@pytest.mark.parametrize("kind", ["config", "policy", "policy-test"])
def test_committed_schemas_are_current(kind: str) -> None:
    out = run("schema", kind, cwd=ROOT)
    assert out.returncode == 0
    committed = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text())
    assert json.loads(out.stdout) == committed, (
        f"schemas/{kind}.schema.json is stale: regenerate with "
        f"`wimse-gateway schema {kind} > schemas/{kind}.schema.json`")


def test_schemas_validate_the_examples() -> None:
    import jsonschema

    for kind, files in (("config", (ROOT / "config").glob("*.yaml")),
                        ("policy", [p for p in (ROOT / "policies").glob("*.yaml")]),
                        ("policy-test", (ROOT / "policies" / "tests").glob("*.yaml"))):
        schema = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text())
        for f in files:
            jsonschema.validate(yaml.safe_load(f.read_text()), schema)
