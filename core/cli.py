"""The ``ml-processing`` command: ``serve``, ``worker``, ``plugins``, and the commands plugins add.

The built-in commands run the kernel. Every other command comes from a plugin's ``register_commands``
hook (`Command`), as Datasette's do: the CLI loads the plugins as ``ml-processing plugins`` does (the
configuration of ``--config`` or ``MLP_CONFIG``, entry points unless ``MLP_DISABLE_AUTOLOAD=1``) and adds
each command as a subcommand. A command that cannot be added (its hook raises, it is not a `Command`, its
name is taken, its options do not build) is reported on stderr by plugin and name; the others still work.

>>> _peek(["replay", "--bars", "10", "-c", "my.toml"])
('replay', 'my.toml')
>>> _peek(["--help"])
(None, None)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import re
import sys
import textwrap
from collections.abc import Awaitable, Coroutine, Iterable, Sequence
from typing import Any

import zmq

from ..bus.memory import retain_freed_memory
from . import log
from .commands import Command
from .config import LOG_LEVELS, Config, load_config
from .errors import ConfigError
from .kernel import VERSION, Kernel
from .plugins import PluginHost
from .security.commands import COMMANDS as SECURITY_COMMANDS

__all__ = ["Command", "main"]

#: The kernel's own commands beside serve, worker and plugins: they need no plugin loaded.
KERNEL_COMMANDS: dict[str, Command] = SECURITY_COMMANDS
BUILTIN_COMMANDS = ("serve", "worker", "plugins", *KERNEL_COMMANDS)

DESCRIPTION = """\
ml-processing: low-latency technical analysis and machine learning for trading systems.

Trading engines call it over ZeroMQ (Majordomo MDP/0.2, msgpack bodies) on tcp://127.0.0.1:5555 and
stream over pub/sub (publish to :5556, subscribe to :5557); scripts use the REST edge on :8006.
Configuration: plugins.toml (--config, or MLP_CONFIG), environment variables on top; with neither,
the embedded defaults."""

COMMANDS = """\
commands:
  serve    run the whole service: broker, pub/sub proxy, every plugin's actors, REST edge.
           SIGTERM/SIGINT drain in-flight requests (up to [kernel] drain_timeout_s), save state, exit 0.
  worker   run the configured plugins' actors as MDP workers of a remote broker (--broker), to add
           capacity from another process or host; no broker, proxy or REST edge of its own.
  plugins  list every plugin: where it came from, its status, hooks, actors and routes.
  tokens   REST bearer tokens: add NAME --role ROLE (printed once), list, revoke (docs/SECURITY.md).
  keys     print the service's CURVE public key; keys client NAME --role ROLE makes a client key pair."""

ENVIRONMENT = """\
environment: MLP_<SECTION>_<KEY> overrides any key (MLP_EDGE_PORT=8010), plus MODEL_CACHE_SIZE,
FEATURE_CACHE_TTL, PREDICTION_CACHE_TTL, LOG_LEVEL, ENV; MLP_DISABLE_AUTOLOAD=1 skips entry-point plugins."""


def _peek(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """(the command word, the ``--config`` value) of `argv`, read before the parser that knows every
    command exists (the plugins that add commands are found through the configuration)."""
    command = config = None
    args = iter(argv)
    for arg in args:
        if arg in ("--config", "-c"):
            config = next(args, None)
        elif arg.startswith("--config="):
            config = arg.partition("=")[2]
        elif arg.startswith("-c") and not arg.startswith("--"):
            config = arg[2:]
        elif command is None and not arg.startswith("-"):
            command = arg
    return command, config


def _epilog(commands: dict[str, tuple[str, Command]]) -> str:
    lines = [COMMANDS]
    if commands:
        lines.append("\ncommands added by plugins:")
        for name, (plugin, command) in commands.items():
            text = f"{command.help} (plugin {plugin})"
            lines.append(textwrap.fill(text, 104, initial_indent=f"  {name:<8} ", subsequent_indent=" " * 11))
    return "\n".join([*lines, "", ENVIRONMENT])


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", metavar="FILE",
                        help="plugins.toml to read (default: $MLP_CONFIG, else the embedded defaults)")


def _parser(commands: dict[str, tuple[str, Command]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ml-processing", description=DESCRIPTION, epilog=_epilog(commands),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ml-processing {VERSION}")
    names = ",".join([*BUILTIN_COMMANDS, *commands])
    sub = parser.add_subparsers(dest="command", metavar=f"{{{names}}}", required=True)
    serve = sub.add_parser("serve", help="run the service (broker, pub/sub, actors, REST edge)",
                           description="Run the whole service on this host.")
    _common(serve)
    serve.add_argument("--processes", type=_at_least_one, metavar="N",
                       help="this process plus N-1 worker processes that answer the stateless ops "
                            "(default: [kernel] processes)")
    worker = sub.add_parser("worker", help="serve this host's actors for a remote broker",
                            description="Join a remote broker: each configured actor becomes an MDP worker.")
    _common(worker)
    worker.add_argument("--broker", metavar="ENDPOINT",
                        help="broker to join, e.g. tcp://HOST:5555 (default: [bus] broker_connect)")
    worker.add_argument("--keys", metavar="FILE",
                        help="client key file of a broker with authentication on (ml-processing keys client NAME "
                             "--role worker --role compute): sets [security] client_keys and auth = true for this run")
    worker.add_argument("--name", metavar="NAME", type=_member_name,
                        help="this worker's name among the processes that share the live symbols "
                             "(default: HOST-PID); its control service is process.NAME")
    worker.add_argument("--shared-data", action="store_true",
                        help="[service] data_dir is the serve host's, mounted here: read it, never write it, "
                             "and reload what changes there when the serve process says so (one registry)")
    worker.add_argument("--process", type=_at_least_one, metavar="INDEX", help=argparse.SUPPRESS)  # serve's own
    plugins = sub.add_parser("plugins", help="list plugins, their source, hooks and actors",
                             description="Discover plugins as `serve` would and report each one.")
    _common(plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for name, command in KERNEL_COMMANDS.items():
        _add_command(sub.add_parser(name, help=command.help, description=command.description or command.help),
                     command)
    for name, (_, command) in commands.items():
        _add_command(sub.add_parser(name, help=command.help, description=command.description or command.help),
                     command)
    return parser


def _add_command(parser: argparse.ArgumentParser, command: Command) -> None:
    _common(parser)
    command.add_arguments(parser)


# -- commands from plugins -------------------------------------------------------------------------------


def plugin_commands(config: Config) -> dict[str, tuple[str, Command]]:
    """Command name -> (plugin, `Command`) of every loaded plugin's ``register_commands``, in plugin order.

    `ConfigError` when a plugin's section of the configuration is wrong. A command that cannot be added is
    left out and reported on stderr, naming its plugin.
    """
    host = PluginHost(config)
    host.load()
    hook = host.pm.hook.register_commands
    implementers = [impl.plugin_name for impl in hook.get_hookimpls()]
    found: dict[str, tuple[str, Command]] = {}
    answered = set()
    for plugin, result in host.call_each("register_commands"):
        answered.add(plugin)
        for item in _items(plugin, result):
            problem = _problem(item, found)
            if problem:
                _report(plugin, problem)
                continue
            found[item.name] = (plugin, item)
    for plugin in implementers:
        info = host.infos.get(plugin)
        if plugin not in answered and info is not None and info.error:
            _report(plugin, f"{info.error}; its commands are left out")
    return found


def _items(plugin: str, result: Any) -> list[Any]:
    if isinstance(result, Command):
        return [result]
    if isinstance(result, Iterable) and not isinstance(result, (str, bytes)):
        return list(result)
    _report(plugin, f"register_commands must return Command objects, got {result!r:.80}")
    return []


def _problem(item: Any, found: dict[str, tuple[str, Command]]) -> str | None:
    """Why `item` cannot be a subcommand, or None."""
    if not isinstance(item, Command):
        return f"register_commands returned {item!r:.80}, not a Command; left out"
    if item.name in BUILTIN_COMMANDS:
        return f"command {item.name!r} is a built-in command; left out"
    if item.name in found:
        return f"command {item.name!r} is already added by plugin {found[item.name][0]!r}; left out"
    try:
        _add_command(argparse.ArgumentParser(prog=f"ml-processing {item.name}"), item)
    except Exception as exc:  # a plugin's code: any error leaves the command out
        return f"command {item.name!r}: its arguments do not build ({type(exc).__name__}: {exc}); left out"
    return None


def _report(plugin: str, problem: str) -> None:
    print(f"ml-processing: plugin {plugin!r}: {problem}", file=sys.stderr)


def _run_command(name: str, plugin: str, command: Command, args: argparse.Namespace, config: Config) -> int:
    """Run a plugin's command; an unexpected error is reported by name (exit code 1)."""
    try:
        outcome = command.run(args, config)
        if inspect.isawaitable(outcome):
            return _run(_awaited(outcome), config)
        return int(outcome)
    except (ConfigError, OSError, zmq.ZMQError):
        raise
    except Exception as exc:  # a plugin's code: report it, with the traceback in the log
        log.get_logger(__name__).error("command_failed", command=name, plugin=plugin, exc_info=True)
        print(f"ml-processing {name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


async def _awaited(outcome: Awaitable[int]) -> int:
    return int(await outcome)


# -- the built-in commands ---------------------------------------------------------------------------------


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


def _configure_logs(config: Config, least: str | None = None) -> None:
    level = max(config.service.log_level, least or "debug", key=LOG_LEVELS.index)
    log.configure(level, json=True if config.service.env == "production" else config.service.log_json)


def with_client_keys(config: Config, path: str) -> Config:
    """`config` for a worker that joins a broker with authentication on using the key file at `path`
    (written by ``ml-processing keys client``): ``[security] auth = true`` and ``client_keys = path``."""
    security = dataclasses.replace(config.security, auth=True, client_keys=path)
    return dataclasses.replace(config, security=security)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"must be between 1 and 256, got {value}")
    return value


def _member_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", text):
        raise argparse.ArgumentTypeError(f"1-64 letters, digits, _ or -, got {text!r}")
    return text


def _config_error(exc: ConfigError) -> int:
    print(f"ml-processing: configuration error: {exc.message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    wanted, path = _peek(argv)
    commands: dict[str, tuple[str, Command]] = {}
    error: ConfigError | None = None
    try:
        config = load_config(path)
        if wanted in BUILTIN_COMMANDS or (wanted is None and "--version" in argv):
            _configure_logs(config)
        else:  # help, or a command a plugin adds: only the service's warnings and errors while plugins load
            _configure_logs(config, "warning")
            commands = plugin_commands(config)
    except ConfigError as exc:
        if wanted is not None and wanted not in BUILTIN_COMMANDS:
            return _config_error(exc)
        error = exc
    args = _parser(commands).parse_args(argv)
    if error is not None:
        return _config_error(error)
    try:
        if args.config != path:  # an abbreviated option (--conf) that the first look did not read
            config = load_config(args.config)
        if args.command in commands:
            plugin, command = commands[args.command]
            if command.log_level is not None:
                _configure_logs(config, command.log_level)
            return _run_command(args.command, plugin, command, args, config)
        if args.command == "plugins":
            return _plugins_command(config, args.json)
        if args.command in KERNEL_COMMANDS:
            return _run_command(args.command, "kernel", KERNEL_COMMANDS[args.command], args, config)
        if getattr(args, "keys", None):
            config = with_client_keys(config, args.keys)
        if getattr(args, "processes", None):
            config = dataclasses.replace(config, kernel=dataclasses.replace(config.kernel, processes=args.processes))
        kernel = Kernel(config, mode=args.command, broker=getattr(args, "broker", None),
                        process=getattr(args, "process", None), name=getattr(args, "name", None),
                        shared_data=getattr(args, "shared_data", False))
        return _run(kernel.run(), config)
    except ConfigError as exc:
        return _config_error(exc)
    except (OSError, zmq.ZMQError) as exc:
        print(f"ml-processing: cannot start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
