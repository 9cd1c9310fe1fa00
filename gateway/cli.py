"""Command line: ``run``, ``check``, ``demo``, ``schema``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway import __version__
from gateway.clock import SystemClock
from gateway.config.load import load_config
from gateway.config.source import ConfigError
from gateway.proxy.listener import Gateway
from gateway.runtime import Runtime, build_runtime

log = logging.getLogger("wimse_gateway")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(gateway: Gateway, after_start: Callable[[Gateway], Awaitable[None]] | None = None
                ) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads. In-flight requests drain before exit."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    reloads: set[asyncio.Task[bool]] = set()

    def hup() -> None:
        task = asyncio.create_task(gateway.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hup)
    await gateway.start()
    if after_start:
        await after_start(gateway)
    await stop.wait()
    log.info("stopping: draining in-flight requests")
    await gateway.stop()
    log.info("stopped")


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.supervisor import Supervisor, default_workers

    workers = args.workers if args.workers is not None else default_workers()
    try:
        _event_loop_policy()
        if workers > 1:
            return asyncio.run(Supervisor(args.config, workers, args.log_level).run())
        asyncio.run(serve(Gateway(args.config)))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.config)
        rt = build_runtime(loaded, SystemClock())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.problems)} error(s)", file=sys.stderr)
        return 1
    for w in rt.warnings:
        print(f"warning: {w}")
    print(f"ok: {len(rt.policy.engine.rules)} rules, {len(rt.profiles)} profiles, "
          f"policy {rt.policy.digest}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway import demo

    _event_loop_policy()
    return demo.main(args)


def cmd_schema(args: argparse.Namespace) -> int:
    from gateway.config.models import GatewayConfig
    from gateway.config.policy import PolicyFileConfig
    from gateway.policytool import PolicyTestFile

    model = {"config": GatewayConfig, "policy": PolicyFileConfig,
             "policy-test": PolicyTestFile}[args.kind]
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"wimse-gateway {args.kind} file"
    print(json.dumps(schema, indent=2))
    return 0


def _runtime_or_exit(config: Path) -> Runtime | None:
    try:
        return build_runtime(load_config(config), SystemClock())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def cmd_policy_explain(args: argparse.Namespace) -> int:
    from gateway import policytool

    rt = _runtime_or_exit(args.config)
    if rt is None:
        return 2
    claims = {}
    for item in args.claim or []:
        k, sep, v = item.partition("=")
        if not sep:
            print(f"--claim takes name=value, got {item!r}", file=sys.stderr)
            return 2
        claims[k] = v
    try:
        caller = policytool.make_caller(policytool.CallerSpec(
            identity=args.caller, method=args.authn, proof_of_possession=args.pop,
            claims=claims))
        dest = policytool.make_destination(rt, policytool.RequestSpec(
            method=args.method, url=args.url, route=args.route))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(policytool.explain(rt, caller, dest))
    return 0


def cmd_policy_test(args: argparse.Namespace) -> int:
    from gateway import policytool

    rt = _runtime_or_exit(args.config)
    if rt is None:
        return 2
    failed = 0
    total = 0
    for path in args.tests:
        try:
            tests = policytool.load_tests(path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return 2
        for res in policytool.run_tests(rt, tests):
            total += 1
            if res.ok:
                print(f"PASS  {path.name}: {res.name}")
            else:
                failed += 1
                print(f"FAIL  {path.name}: {res.name}")
                for line in res.diff:
                    print("      " + line.replace("\n", "\n      "))
    print(f"{total - failed} passed, {failed} failed")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wimse-gateway", description=__doc__)
    p.add_argument("--version", action="version", version=f"wimse-gateway {__version__}")
    p.add_argument("--log-level", default="info")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve with a config file")
    run.add_argument("-c", "--config", required=True, type=Path)
    run.add_argument("--workers", type=int, default=None,
                     help="worker processes sharing the ports (default: one per core)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate config and policy; non-zero exit on errors")
    check.add_argument("-c", "--config", required=True, type=Path)
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="self-contained demo with its own CA, issuer, upstream")
    demo.add_argument("--state-dir", type=Path, default=None,
                      help="where keys and certificates go (default: a fresh temp folder)")
    demo.add_argument("--port", type=int, default=8443, help="gateway mTLS listener")
    demo.add_argument("--proxy-port", type=int, default=8080, help="gateway plain HTTP listener")
    demo.add_argument("--admin-port", type=int, default=9901)
    demo.add_argument("--upstream-port", type=int, default=8081)
    demo.add_argument("--partner-port", type=int, default=8082, help="sample mTLS upstream")
    demo.set_defaults(func=cmd_demo)

    policy = sub.add_parser("policy", help="explain and test policy decisions")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    explain = psub.add_parser("explain", help="which rule matches a request, and why")
    explain.add_argument("-c", "--config", required=True, type=Path)
    explain.add_argument("--caller", default=None, help="workload identifier; omit: anonymous")
    explain.add_argument("--authn", default=None,
                         choices=["mtls", "wit", "httpsig", "dpop", "bearer", "none"],
                         help="how the caller authenticated (default mtls)")
    explain.add_argument("--pop", default=None, action=argparse.BooleanOptionalAction,
                         help="credential bound to a key (default: by method)")
    explain.add_argument("--claim", action="append", help="name=value, repeatable")
    explain.add_argument("--method", default="GET")
    explain.add_argument("--url", required=True, help="destination URL")
    explain.add_argument("--route", default=None)
    explain.set_defaults(func=cmd_policy_explain)
    ptest = psub.add_parser("test", help="run expected decisions from YAML files")
    ptest.add_argument("-c", "--config", required=True, type=Path)
    ptest.add_argument("tests", nargs="+", type=Path)
    ptest.set_defaults(func=cmd_policy_test)

    schema = sub.add_parser("schema", help="print the JSON Schema of config or policy files")
    schema.add_argument("kind", choices=["config", "policy", "policy-test"])
    schema.set_defaults(func=cmd_schema)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
