"""Kernel lifecycle: start and stop in-process, graceful drain, and the real process under SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ml_processing.bus import mdp
from ml_processing.core.errors import MlpError, Timeout, Unavailable
from ml_processing.core.kernel import Kernel
from tests.conftest import make_config
from tests.core.helpers import free_ports, wait_until, wait_until_sync

ROOT = Path(__file__).resolve().parents[2]


# -- in-process ---------------------------------------------------------------------------------------------


async def test_start_serve_stop_and_stop_again(tmp_path: Path) -> None:
    kernel = Kernel(make_config(tmp_path))
    assert kernel.state == "created"
    await kernel.start()
    try:
        assert kernel.state == "running"
        assert kernel.status == "healthy"
        assert set(kernel.cells) == {"kernel", "indicators", "features", "models", "patterns", "sentiment", "echo"}
        assert all(cell.state == "running" for cell in kernel.cells.values())
        broker = kernel.endpoints["broker"][0]
        assert broker.startswith("tcp://127.0.0.1:")
        assert kernel.endpoints["pub_in"] and kernel.endpoints["pub_out"]
        assert kernel.edge_url is not None and kernel.edge_url.startswith("http://127.0.0.1:")
        client = mdp.AsyncClient(broker, timeout=3.0)
        try:
            assert await client.request("echo", "ping") == "pong"
        finally:
            client.close()
        edge = kernel.edge_url
    finally:
        await kernel.stop()
    assert kernel.state == "stopped"
    assert all(cell.state == "stopped" for cell in kernel.cells.values())

    await kernel.stop()  # twice is harmless
    assert kernel.state == "stopped"

    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{edge}/health", timeout=aiohttp.ClientTimeout(total=2)):
                pass
    late = mdp.AsyncClient(broker, timeout=0.3)
    try:
        with pytest.raises(Timeout):
            await late.request("echo", "ping")
    finally:
        late.close()


async def test_graceful_drain_finishes_in_flight_and_refuses_new(kernel: Kernel, client: mdp.AsyncClient) -> None:
    assert kernel.broker is not None
    slow = asyncio.create_task(client.request("flaky", "slow", {"seconds": 0.5}))
    await wait_until(lambda: kernel.broker is not None and kernel.broker.inflight >= 1, what="slow in flight")

    stopping = asyncio.create_task(kernel.stop())
    await wait_until(lambda: kernel.state == "stopping", what="kernel stopping")

    newcomer = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=1.0)
    try:
        with pytest.raises((Unavailable, Timeout)) as caught:
            await newcomer.request("echo", "ping")
        if isinstance(caught.value, Unavailable):
            assert "shutting down" in caught.value.message
    finally:
        newcomer.close()

    assert await slow == {"slept": 0.5}
    await asyncio.wait_for(stopping, timeout=10)
    assert kernel.state == "stopped"
    await kernel.stop()  # the fixture stops once more: harmless


async def test_rest_edge_stops_accepting_while_draining(kernel: Kernel, client: mdp.AsyncClient) -> None:
    edge = kernel.edge_url
    slow = asyncio.create_task(client.request("flaky", "slow", {"seconds": 0.5}))
    await wait_until(lambda: kernel.broker is not None and kernel.broker.inflight >= 1, what="slow in flight")
    stopping = asyncio.create_task(kernel.stop())
    await wait_until(lambda: kernel.state == "stopping", what="kernel stopping")
    async with aiohttp.ClientSession() as http:
        try:
            async with http.get(f"{edge}/api/v1/ping", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                status = resp.status
        except (aiohttp.ClientConnectionError, TimeoutError):
            status = None
    assert status in (None, 503)
    assert await slow == {"slept": 0.5}
    await asyncio.wait_for(stopping, timeout=10)


async def test_drain_gives_up_at_the_deadline(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, modules=("tests.support.flaky",), drain_timeout_s=0.2)
    kernel = Kernel(cfg)
    await kernel.start()
    client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=1.0)
    try:
        slow = asyncio.create_task(client.request("flaky", "slow", {"seconds": 30}))
        await wait_until(lambda: kernel.broker is not None and kernel.broker.inflight >= 1, what="slow in flight")
        await asyncio.wait_for(kernel.stop(), timeout=10)  # bounded: never the 30 s of the request
        assert kernel.state == "stopped"
        with pytest.raises(MlpError):
            await slow
    finally:
        client.close()
        await kernel.stop()


async def test_a_request_leaves_no_log_context_behind(kernel: Kernel) -> None:
    from ml_processing.core import log

    assert log.REQUEST.get() is None
    assert await kernel.request("echo", "ping", rid="rid-1") == "pong"
    assert log.REQUEST.get() is None


# -- the real process ------------------------------------------------------------------------------------------


def _write_config(tmp_path: Path, extra: str = "") -> tuple[Path, dict[str, int]]:
    broker, pub_in, pub_out, edge = free_ports(4)
    path = tmp_path / "plugins.toml"
    path.write_text(f"""
[service]
data_dir = "{tmp_path / 'var'}"
log_level = "warning"

[bus]
broker_bind = ["tcp://127.0.0.1:{broker}"]
broker_connect = "tcp://127.0.0.1:{broker}"
pub_in = "tcp://127.0.0.1:{pub_in}"
pub_out = "tcp://127.0.0.1:{pub_out}"

[edge]
port = {edge}

[kernel]
drain_timeout_s = 8.0

[plugins]
autoload = false
modules = ["tests.support.flaky"]
{extra}""", encoding="utf-8")
    return path, {"broker": broker, "edge": edge}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


def _health_or_none(url: str) -> Any:
    try:
        return _get_json(url)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_drains_on_signal_and_exits_zero(tmp_path: Path, sig: signal.Signals) -> None:
    path, ports = _write_config(tmp_path)
    health_url = f"http://127.0.0.1:{ports['edge']}/health"
    with open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "ml_processing.core.cli", "serve", "--config", str(path)],
                                cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        def up() -> Any:
            assert proc.poll() is None, (tmp_path / "stderr.log").read_text()
            return _health_or_none(health_url)

        health = wait_until_sync(up, timeout=30, what="GET /health")
        assert health["status"] == "healthy"
        assert "flaky" in health["actors"]

        result: dict[str, Any] = {}

        def call_slow() -> None:
            with mdp.Client(f"tcp://127.0.0.1:{ports['broker']}", timeout=15) as c:
                try:
                    result["reply"] = c.request("flaky", "slow", {"seconds": 1})
                except MlpError as exc:
                    result["error"] = exc

        caller = threading.Thread(target=call_slow, daemon=True)
        caller.start()
        wait_until_sync(lambda: (_health_or_none(health_url) or {}).get("bus", {}).get("inflight", 0) >= 1,
                        timeout=10, what="the slow request in flight")
        proc.send_signal(sig)
        code = proc.wait(timeout=20)
        caller.join(timeout=20)
        assert not caller.is_alive()
        assert result == {"reply": {"slept": 1}}
        assert code == 0, (tmp_path / "stderr.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_serve_with_a_config_error_exits_2_with_one_line(tmp_path: Path) -> None:
    path, _ = _write_config(tmp_path)
    path.write_text(path.read_text(encoding="utf-8").replace("[kernel]\n", "[kernel]\nflux_capacitor = 1\n"),
                    encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "ml_processing.core.cli", "serve", "--config", str(path)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "flux_capacitor" in lines[0] and str(path) in lines[0]
