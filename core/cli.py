"""The ``ml-processing`` command: ``serve``, ``worker``, ``plugins``, ``replay``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import zmq

from . import log, replay
from .config import LOG_LEVELS, Config, load_config
from .errors import ConfigError
from .kernel import VERSION, Kernel
from .memory import retain_freed_memory

DESCRIPTION = """\
ml-processing: low-latency technical analysis and machine learning for trading systems.

Trading engines call it over ZeroMQ (Majordomo MDP/0.2, msgpack bodies) on tcp://127.0.0.1:5555 and
stream over pub/sub (publish to :5556, subscribe to :5557); scripts use the REST edge on :8006.
Configuration: plugins.toml (--config, or MLP_CONFIG), environment variables on top; with neither,
the embedded defaults."""

EPILOG = """\
commands:
  serve    run the whole service: broker, pub/sub proxy, every plugin's actors, REST edge.
           SIGTERM/SIGINT drain in-flight requests (up to [kernel] drain_timeout_s), save state, exit 0.
  worker   run the configured plugins' actors as MDP workers of a remote broker (--broker), to add
           capacity from another process or host; no broker, proxy or REST edge of its own.
  plugins  list every plugin: where it came from, its status, hooks, actors and routes.
  replay   replay bars (a CSV file or a seeded synthetic market) through an in-process service over
           pub/sub, on its own loopback ports and a temporary data directory; writes report.json and
           report.html (prequential accuracy, ensemble weights, throughput) into --out.

environment: MLP_<SECTION>_<KEY> overrides any key (MLP_EDGE_PORT=8010), plus MODEL_CACHE_SIZE,
FEATURE_CACHE_TTL, PREDICTION_CACHE_TTL, LOG_LEVEL, ENV; MLP_DISABLE_AUTOLOAD=1 skips entry-point plugins."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ml-processing", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ml-processing {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="{serve,worker,plugins,replay}", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", metavar="FILE",
                       help="plugins.toml to read (default: $MLP_CONFIG, else the embedded defaults)")

    serve = sub.add_parser("serve", help="run the service (broker, pub/sub, actors, REST edge)",
                           description="Run the whole service on this host.")
    common(serve)
    worker = sub.add_parser("worker", help="serve this host's actors for a remote broker",
                            description="Join a remote broker: each configured actor becomes an MDP worker.")
    common(worker)
    worker.add_argument("--broker", metavar="ENDPOINT",
                        help="broker to join, e.g. tcp://HOST:5555 (default: [bus] broker_connect)")
    plugins = sub.add_parser("plugins", help="list plugins, their source, hooks and actors",
                             description="Discover plugins as `serve` would and report each one.")
    common(plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    replayer = sub.add_parser("replay", help="replay bars through an in-process service and write a report",
                              description="Publish bars through the live path of an in-process service "
                                          "(its own loopback ports and temporary data directory) and report "
                                          "predictions, signals, prequential accuracy, ensemble weights and "
                                          "throughput. Exit codes: 0 done, 1 the replay failed, 2 bad "
                                          "arguments or CSV.")
    common(replayer)
    replay.add_arguments(replayer)
    return parser


def _run(coro: Coroutine[Any, Any, int], config: Config) -> int:
    retain_freed_memory(config.kernel.retain_memory_mb)
    if config.kernel.uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def _plugins_command(config: Config, as_json: bool) -> int:
    kernel = Kernel(config)
    kernel.discover()
    report = kernel.plugins.report()
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    for info in report:
        print(f"{info['name']}  [{info['status']}]  {info['source']}  {info['module']}")
        print(f"    hooks:  {', '.join(info['hooks']) or '-'}")
        print(f"    actors: {', '.join(info['actors']) or '-'}")
        if info["routes"]:
            print(f"    routes: {', '.join(info['routes'])}")
        if info["error"]:
            print(f"    error:  {info['error']}")
    return 0


def _replay_command(args: argparse.Namespace, config: Config) -> int:
    try:
        job = replay.prepare(args, config)
    except replay.ReplayInputError as exc:
        print(f"ml-processing replay: {exc}", file=sys.stderr)
        return 2
    return _run(replay.execute(job), config)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ml-processing: configuration error: {exc.message}", file=sys.stderr)
        return 2
    json_logs = True if config.service.env == "production" else config.service.log_json
    level = config.service.log_level
    if args.command == "replay":  # the progress line stays readable: the service's warnings and errors only
        level = max(level, "warning", key=LOG_LEVELS.index)
    log.configure(level, json=json_logs)
    try:
        if args.command == "plugins":
            return _plugins_command(config, args.json)
        if args.command == "replay":
            return _replay_command(args, config)
        kernel = Kernel(config, mode=args.command, broker=getattr(args, "broker", None))
        return _run(kernel.run(), config)
    except ConfigError as exc:
        print(f"ml-processing: configuration error: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, zmq.ZMQError) as exc:
        print(f"ml-processing: cannot start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
