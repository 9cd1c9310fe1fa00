"""Policy decision time for 10, 1,000 and 10,000 rules.

    .venv/bin/python -m benchmarks.policy_decide

Rules look like a generated egress policy: half name a destination host (plus a caller glob,
methods and a path), half name an exact caller identity (plus a path prefix), and ten "wide"
rules (a namespace glob, no host) sit among them, as a hand-written policy would have. Requests
hit random rules, or miss every rule and fall to the catch-all. Prints the median and p99 of one
decide() call. Cost grows with the number of wide rules, not with the total.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from yarl import URL

from gateway.model import AuthnMethod, Caller, Destination
from gateway.policy.load import PolicyContext, load_policy


def policy_text(n: int) -> str:
    lines = ["rules:"]
    wide_every = max(1, (n - 1) // 10)
    for i in range(n - 1):
        if i % wide_every == wide_every // 2:
            lines.append(f"  - {{id: wide-{i}, caller: {{identity: 'spiffe://td/ns/ops/**'}}, "
                         f"destination: {{path_prefix: /admin/{i}}}, action: forward}}")
        elif i % 2:
            lines.append(f"  - {{id: r{i}, caller: {{identity: 'spiffe://td/ns/shop/sa/svc{i}'}}, "
                         f"destination: {{path_prefix: /v1/, methods: [GET]}}, action: forward}}")
        else:
            lines.append(f"  - {{id: r{i}, caller: {{identity: 'spiffe://td/ns/*/sa/svc{i}'}}, "
                         f"destination: {{host: api{i}.example.com, methods: [GET, POST], "
                         f"path: '/v1/**'}}, action: forward}}")
    lines.append("  - {id: default-deny, action: deny}")
    return "\n".join(lines) + "\n"


def measure(n: int, samples: int = 20000) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "p.yaml"
        f.write_text(policy_text(n))
        t0 = time.perf_counter()
        pol = load_policy([f], PolicyContext(frozenset(), frozenset(), False))
        load_s = time.perf_counter() - t0
    engine = pol.engine
    rng = random.Random(1)
    reqs = []
    for _ in range(1000):
        i = rng.randrange(max(1, n - 1))
        caller = Caller(f"spiffe://td/ns/shop/sa/svc{i}", "td", AuthnMethod.MTLS, True, None)
        host = f"api{i}.example.com" if rng.random() < 0.8 else "unknown.example.com"
        reqs.append((caller, Destination(URL(f"https://{host}/v1/orders/{i}"), "GET", "fwd",
                                         "forward")))
    times = []
    for k in range(samples):
        c, d = reqs[k % len(reqs)]
        t = time.perf_counter_ns()
        engine.decide(c, d)
        times.append(time.perf_counter_ns() - t)
    times.sort()
    return statistics.median(times) / 1000, times[int(len(times) * 0.99)] / 1000, load_s


def main() -> int:
    print(f"{'rules':>7} {'median us':>10} {'p99 us':>8} {'load s':>7}")
    for n in (10, 1000, 10000):
        med, p99, load_s = measure(n)
        print(f"{n:>7} {med:>10.2f} {p99:>8.2f} {load_s:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
