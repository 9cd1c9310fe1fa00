"""Imports run one way: base <- config <- stages <- runtime <- proxy <- entry points."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "gateway"

LEVEL = {
    "errors": 0, "clock": 0, "model": 0, "keys": 0, "ca": 0, "httpsig": 0,
    "config": 1,
    "authn": 2, "policy": 2, "exchange": 2, "inject": 2, "observe": 2,
    "runtime": 3,
    "proxy": 4,
    "cli": 5, "demo": 6, "admin": 5, "policytool": 4.5, "supervisor": 4.5,
}
STAGES = {"authn", "policy", "exchange", "inject", "observe"}


def _unit(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def test_imports_go_one_way() -> None:
    problems = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        mod = ".".join(rel.parts)
        if mod.endswith("__init__"):
            mod = mod.rsplit(".", 1)[0]
        if mod == "gateway":
            continue
        me = _unit(mod)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if not t.startswith("gateway.") or t == "gateway":
                    continue
                other = _unit(t)
                if other == me:
                    continue
                if LEVEL[other] > LEVEL[me] or (other in STAGES and me in STAGES):
                    problems.append(f"{mod} imports {t}")
    assert not problems, "\n".join(problems)
