"""The ``ml-processing`` command: help, ``plugins``, commands that plugins add (``register_commands``), and
``worker`` processes joining a broker."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ml_processing.bus import mdp
from ml_processing.core import cli
from ml_processing.core.config import SecurityConfig
from ml_processing.core.kernel import Kernel
from ml_processing.core.security.service import load_client_keys
from tests.conftest import make_config
from tests.core.helpers import running, wait_until, write_module

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _console_script() -> list[str]:
    script = Path(sys.executable).parent / "ml-processing"
    if script.exists():
        return [str(script)]
    found = shutil.which("ml-processing")
    return [found] if found else [sys.executable, "-m", "ml_processing.core.cli"]


@pytest.fixture
def quiet_cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run `cli.main` in-process without our MLP_ variables, and without letting it configure logging.

    structlog caches loggers on first use; configured here they would keep pytest's capture stream, which
    is closed after the test, and later tests would fail writing a log line.
    """
    for var in [v for v in os.environ if v.startswith("MLP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(cli.log, "configure", lambda *args, **kwargs: None)
    yield


def test_help_explains_every_command() -> None:
    done = subprocess.run([*_console_script(), "--help"], capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for command, words in (("serve", "drain"), ("worker", "--broker"), ("plugins", "hooks"),
                           ("replay", "report.html")):
        lines = [line for line in text.splitlines() if line.strip().startswith(command)]
        assert lines, f"--help does not list {command}"
        assert words in text
    assert "MLP_DISABLE_AUTOLOAD" in text and "plugins.toml" in text


@pytest.mark.parametrize(("command", "option"), [("serve", "--config"), ("worker", "--broker"),
                                                 ("plugins", "--json")])
def test_each_command_has_its_own_help(quiet_cli: None, capsys: pytest.CaptureFixture[str], command: str,
                                       option: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"])
    assert exited.value.code == 0
    assert option in capsys.readouterr().out


def test_no_command_is_a_usage_error(quiet_cli: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([])
    assert exited.value.code == 2
    assert "serve" in capsys.readouterr().err


def _plugins_config(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text('[service]\nlog_level = "error"\n[plugins]\nautoload = false\n'
                    'modules = ["ml_processing.plugins._template", "mlp_no_such_plugin"]\n', encoding="utf-8")
    return path


def _run_plugins(tmp_path: Path, *options: str) -> str:
    """`ml-processing plugins` as a user runs it: stdout must hold the report and nothing else."""
    done = subprocess.run([*_console_script(), "plugins", *options, "--config", str(_plugins_config(tmp_path))],
                          capture_output=True, text=True, timeout=60, env=_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_plugins_lists_every_plugin(tmp_path: Path) -> None:
    out = _run_plugins(tmp_path)
    blocks: dict[str, str] = {}
    for line in out.splitlines():
        if line and not line.startswith(" "):
            current = line.split()[0]
            blocks[current] = line + "\n"
        elif line:
            blocks[current] += line + "\n"
    assert set(blocks) == {"kernel", "sdk", "indicators", "features", "models", "patterns", "sentiment", "replay", "_template", "mlp_no_such_plugin"}
    assert "[loaded]" in blocks["kernel"] and "builtin" in blocks["kernel"]
    assert "actors: kernel" in blocks["kernel"] and "register_actors" in blocks["kernel"]
    assert "[loaded]" in blocks["_template"] and "config" in blocks["_template"]
    assert "actors: echo" in blocks["_template"]
    assert "register_routes" in blocks["_template"] and "POST /api/v1/echo" in blocks["_template"]
    assert "[broken]" in blocks["mlp_no_such_plugin"] and "error:" in blocks["mlp_no_such_plugin"]


def test_plugins_json(tmp_path: Path) -> None:
    report = {p["name"]: p for p in json.loads(_run_plugins(tmp_path, "--json"))}
    assert report["kernel"]["source"] == "builtin"
    assert report["kernel"]["actors"] == ["kernel"]
    assert report["_template"] == {
        "name": "_template", "source": "config", "module": "ml_processing.plugins._template", "enabled": True,
        "hooks": ["register_actors", "register_config_schemas", "register_routes"], "actors": ["echo"],
        "routes": ["POST /api/v1/echo"], "error": None, "status": "loaded"}
    assert report["mlp_no_such_plugin"]["status"] == "broken"
    assert "ModuleNotFoundError" in report["mlp_no_such_plugin"]["error"]


def test_plugins_with_a_config_error_exits_2(quiet_cli: None, capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    path = tmp_path / "plugins.toml"
    path.write_text("[edge]\nport = 70000\n", encoding="utf-8")
    assert cli.main(["plugins", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "port" in err and str(path) in err


# -- commands that plugins add -------------------------------------------------------------------------------

HELLO = """
import asyncio

from ml_processing.sdk import Command, hookimpl


def add_arguments(parser):
    parser.add_argument("--times", type=int, default=1)


def hello(args, config):
    print(f"hello x{args.times}, {config.source}")
    return 3


async def later(args, config):
    await asyncio.sleep(0)
    print("hello from the event loop")
    return 0


def boom(args, config):
    raise RuntimeError("the command broke")


@hookimpl
def register_commands():
    return [Command("hello", "say hello from a plugin", add_arguments, hello),
            Command("hello-later", "say hello on the event loop", lambda parser: None, later),
            Command("boom", "fail", lambda parser: None, boom)]
"""

RAISES = """
from ml_processing.sdk import hookimpl


@hookimpl
def register_commands():
    raise RuntimeError("no commands today")
"""

CLASHES = """
from ml_processing.sdk import Command, hookimpl


def nothing(parser):
    return None


def taken(parser):
    parser.add_argument("--config")  # the CLI adds --config to every command


@hookimpl
def register_commands():
    run = lambda args, config: 0
    return ["not a command", Command("serve", "mine", nothing, run), Command("replay", "mine", nothing, run),
            Command("hello", "mine", nothing, run), Command("bad-args", "mine", taken, run),
            Command("fine", "still added", nothing, run)]
"""


def _commands_config(folder: Path, *modules: str) -> Path:
    path = folder.parent / "commands.toml"
    listed = ", ".join(f'"{m}"' for m in modules)
    path.write_text(f'[plugins]\nautoload = false\nmodules = [{listed}]\n[kernel]\nuvloop = false\n',
                    encoding="utf-8")
    return path


def test_a_plugin_adds_commands_that_get_their_arguments_and_the_configuration(
        quiet_cli: None, capsys: pytest.CaptureFixture[str], plugin_dir: Path) -> None:
    write_module(plugin_dir, "mlp_cmd_hello", HELLO)
    config = _commands_config(plugin_dir, "mlp_cmd_hello")
    assert cli.main(["hello", "--times", "2", "--config", str(config)]) == 3  # the command's exit code
    assert f"hello x2, {config}" in capsys.readouterr().out.splitlines()
    assert cli.main(["hello-later", "-c", str(config)]) == 0  # a coroutine runs on the event loop
    assert "hello from the event loop" in capsys.readouterr().out
    assert cli.main(["boom", "--config", str(config)]) == 1
    assert "ml-processing boom: failed: RuntimeError: the command broke" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help", "--config", str(config)])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "commands added by plugins:" in out
    assert "say hello from a plugin (plugin mlp_cmd_hello)" in out and "(plugin replay)" in out


def test_mlp_config_names_the_plugins_that_add_commands(quiet_cli: None, capsys: pytest.CaptureFixture[str],
                                                         plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_module(plugin_dir, "mlp_cmd_hello", HELLO)
    monkeypatch.setenv("MLP_CONFIG", str(_commands_config(plugin_dir, "mlp_cmd_hello")))
    assert cli.main(["hello"]) == 3
    assert any(line.startswith("hello x1, ") for line in capsys.readouterr().out.splitlines())


def test_broken_and_clashing_commands_are_reported_by_name_and_the_rest_works(
        quiet_cli: None, capsys: pytest.CaptureFixture[str], plugin_dir: Path) -> None:
    for name, source in (("mlp_cmd_hello", HELLO), ("mlp_cmd_raises", RAISES), ("mlp_cmd_clashes", CLASHES)):
        write_module(plugin_dir, name, source)
    config = _commands_config(plugin_dir, "mlp_cmd_hello", "mlp_cmd_raises", "mlp_cmd_clashes")
    assert cli.main(["hello", "--config", str(config)]) == 3
    assert cli.main(["fine", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    problems = [line for line in err.splitlines() if line.startswith("ml-processing: plugin ")]
    assert len(problems) == 2 * 6, err  # each of the two runs reports the same six problems
    for text in ("plugin 'mlp_cmd_raises': register_commands raised RuntimeError: no commands today",
                 "plugin 'mlp_cmd_clashes': register_commands returned 'not a command', not a Command",
                 "plugin 'mlp_cmd_clashes': command 'serve' is a built-in command",
                 "plugin 'mlp_cmd_clashes': command 'replay' is already added by plugin 'replay'",
                 "plugin 'mlp_cmd_clashes': command 'hello' is already added by plugin 'mlp_cmd_hello'",
                 "plugin 'mlp_cmd_clashes': command 'bad-args': its arguments do not build"):
        assert text in err, text
    with pytest.raises(SystemExit) as exited:
        cli.main(["bad-args", "--config", str(config)])
    assert exited.value.code == 2  # left out: argparse does not know it


def test_mlp_disable_autoload_leaves_out_the_commands_of_entry_point_plugins(
        quiet_cli: None, capsys: pytest.CaptureFixture[str], plugin_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    dist = plugin_dir / "mlp_cmd-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlp-cmd\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[ml_processing]\nhello = mlp_cmd_auto\n", encoding="utf-8")
    write_module(plugin_dir, "mlp_cmd_auto", HELLO)
    importlib.invalidate_caches()
    config = plugin_dir.parent / "auto.toml"
    config.write_text("[plugins]\nautoload = true\n[kernel]\nuvloop = false\n", encoding="utf-8")
    assert cli.main(["hello", "--config", str(config)]) == 3
    monkeypatch.setenv("MLP_DISABLE_AUTOLOAD", "1")
    with pytest.raises(SystemExit) as exited:
        cli.main(["hello", "--config", str(config)])
    assert exited.value.code == 2
    assert "invalid choice: 'hello'" in capsys.readouterr().err


def test_a_plugin_command_with_a_configuration_error_exits_2(quiet_cli: None, capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    path = tmp_path / "plugins.toml"
    path.write_text("[edge]\nport = 70000\n", encoding="utf-8")
    assert cli.main(["replay", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ml-processing: configuration error:") and "port" in err and "\n" not in err


# -- workers ------------------------------------------------------------------------------------------------


@pytest.fixture
async def serve_kernel(tmp_path: Path) -> AsyncIterator[Kernel]:
    """A serving kernel with only the built-in plugin; workers bring the rest."""
    cfg = make_config(tmp_path, modules=())
    cfg = dataclasses.replace(cfg, bus=dataclasses.replace(cfg.bus, heartbeat_ms=200, liveness=5))
    async with running(cfg) as kernel:
        yield kernel


def _worker_config(tmp_path: Path, kernel: Kernel) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(f"""
[service]
log_level = "warning"
data_dir = "{tmp_path / 'worker-var'}"

[bus]
heartbeat_ms = 200
liveness = 5
pub_in = "{kernel.endpoints['pub_in'][0]}"
pub_out = "{kernel.endpoints['pub_out'][0]}"

[plugins]
autoload = false
modules = ["ml_processing.plugins._template", "tests.support.flaky"]
""", encoding="utf-8")
    return path


def _spawn_worker(config: Path, broker: str, cwd: Path, *options: str) -> subprocess.Popen[bytes]:
    """`ml-processing worker` in a process of its own (Popen returns at once; nothing blocks the loop)."""
    return subprocess.Popen([sys.executable, "-m", "ml_processing.core.cli", "worker", "--config", str(config),
                             "--broker", broker, *options], cwd=cwd, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes: list[int | None] = []
    for proc in procs:
        try:
            await wait_until(lambda p=proc: p.poll() is not None, timeout=15, interval=0.05, what="worker exit")
        except AssertionError:
            proc.kill()
            proc.wait(timeout=10)
            codes.append(None)
            continue
        codes.append(proc.returncode)
    return codes


async def test_worker_processes_join_the_broker_and_share_requests(serve_kernel: Kernel, tmp_path: Path) -> None:
    broker = serve_kernel.endpoints["broker"][0]
    assert serve_kernel.broker is not None
    assert "echo" not in serve_kernel.broker.services()
    config = _worker_config(tmp_path, serve_kernel)
    procs = [_spawn_worker(config, broker, tmp_path) for _ in range(2)]
    client = mdp.AsyncClient(broker, timeout=5.0)
    stopped = False
    try:
        await wait_until(lambda: client.mmi_service("echo"), timeout=30, interval=0.1, what="echo via mmi.service")
        assert await client.request("echo", "ping", {"name": "worker"}) == "pong, worker"
        services = serve_kernel.broker.services
        assert services()["echo"]["local"] is False

        def both_ready() -> bool:
            s = services()
            return all(s.get(name, {}).get("workers") == 2 for name in ("echo", "flaky"))

        await wait_until(both_ready, timeout=30, interval=0.1, what="two workers per service")
        assert "kernel" in services() and services()["kernel"]["local"] is True  # never served by a worker

        replies = await asyncio.gather(*(client.request("echo", "echo", {"i": i}) for i in range(10)))
        assert replies == [{"i": i} for i in range(10)]
        assert services()["echo"]["requests"] >= 11

        # Spread: each worker serves one request at a time, so two slow requests are in progress at once
        # only if the broker gave one to each worker (none idle, none queued).
        slow = [asyncio.create_task(client.request("flaky", "slow", {"seconds": 1.0})) for _ in range(2)]

        def both_busy() -> bool:
            s = services()["flaky"]
            return s["idle"] == 0 and s["queued"] == 0 and s["requests"] >= 2

        await wait_until(both_busy, timeout=5, interval=0.01, what="both flaky workers busy")
        assert await asyncio.gather(*slow) == [{"slept": 1.0}, {"slept": 1.0}]

        codes = await _stop_workers(procs)
        stopped = True
        assert codes == [0, 0]
        await wait_until(lambda: services()["echo"]["workers"] == 0, timeout=10, what="workers said goodbye")
        with pytest.raises(Exception) as caught:
            await client.request("echo", "ping", timeout=2.0)
        assert getattr(caught.value, "code", None) == "unavailable"
    finally:
        client.close()
        if not stopped:
            await _stop_workers(procs)


async def test_a_worker_with_keys_joins_a_broker_with_authentication_on(tmp_path: Path, quiet_cli: None,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(tmp_path, modules=())
    cfg = dataclasses.replace(cfg, bus=dataclasses.replace(cfg.bus, heartbeat_ms=200, liveness=5),
                              security=SecurityConfig(auth=True))
    serve_toml = tmp_path / "serve.toml"
    serve_toml.write_text(f'[service]\ndata_dir = "{cfg.data_path}"\n', encoding="utf-8")
    key_file = tmp_path / "w.key"
    assert cli.main(["keys", "-c", str(serve_toml), "client", "w", "--role", "worker", "--role", "compute",
                     "--service", "echo", "--out", str(key_file)]) == 0
    assert cli.main(["keys", "-c", str(serve_toml), "client", "desk", "--role", "admin",
                     "--out", str(tmp_path / "desk.key")]) == 0
    capsys.readouterr()
    async with running(cfg) as kernel:
        broker = kernel.endpoints["broker"][0]
        assert kernel.broker is not None
        config = _worker_config(tmp_path, kernel)
        keyless = _spawn_worker(config, broker, tmp_path)
        keyed = _spawn_worker(config, broker, tmp_path, "--keys", str(key_file))
        client = mdp.AsyncClient(broker, timeout=5.0, keys=load_client_keys(tmp_path / "desk.key"))
        try:
            await wait_until(lambda: kernel.broker.services().get("echo", {}).get("workers") == 1,
                             timeout=30, interval=0.1, what="the keyed worker serving echo")
            # The serving process does not load echo's plugin, so it knows no role of its ops: admin it is.
            assert await client.request("echo", "ping", {"name": "keys"}) == "pong, keys"
            await asyncio.sleep(1.0)  # the keyless worker had time to try; it never joins, nor serves flaky
            services = kernel.broker.services()
            assert services["echo"]["workers"] == 1 and "flaky" not in services
        finally:
            client.close()
            assert await _stop_workers([keyed, keyless]) == [0, 0]
