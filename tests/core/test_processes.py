"""`serve --processes N`: worker processes answer the stateless ops, the serve process keeps the state, a
state change reaches every process before its reply, a lost process is replaced, and stop takes them all.

Real processes: the serve kernel runs here, its worker process is ``python -m ml_processing.core.cli worker``
over ipc, started by the kernel itself."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ml_processing.bus import mdp
from ml_processing.bus.errors import MlpError
from ml_processing.core.config import load_config
from ml_processing.core.kernel import Kernel
from tests.core.helpers import running, wait_until
from tests.support.groups import group_config

BUILT_IN = ("indicators", "features", "models", "patterns", "sentiment", "replay")  # off: quick processes


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return group_config(tmp_path, monkeypatch, """
[plugins]
autoload = false
modules = ["tests.support.ledger"]
""" + "".join(f"\n[plugins.{name}]\nenabled = false\n" for name in BUILT_IN))


async def _ready(kernel: Kernel) -> dict[str, Any]:
    assert kernel.group is not None
    assert await kernel.group.wait_ready(60), kernel.group.status()
    return kernel.group.status()[0]


async def _while_busy(kernel: Kernel, op: str) -> dict[str, Any]:
    """Ask `op` while the serve process is busy with the service: an idle worker process takes it."""
    assert kernel.broker is not None
    busy = asyncio.ensure_future(kernel.broker.request("ledger", "work", {"seconds": 0.5}))
    await asyncio.sleep(0.05)
    try:
        answer: dict[str, Any] = await kernel.broker.request("ledger", op)
    finally:
        await busy
    return answer


async def test_stateless_ops_are_spread_and_state_stays_with_the_serve_process(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        member = await _ready(kernel)
        assert member["state"] == "running" and member["pid"] != os.getpid()
        assert kernel.broker is not None
        work = await asyncio.gather(*(kernel.broker.request("ledger", "work", {"seconds": 0.3}) for _ in range(2)))
        assert {w["pid"] for w in work} == {os.getpid(), member["pid"]}
        assert (await _while_busy(kernel, "where"))["pid"] == member["pid"]
        assert (await _while_busy(kernel, "owner"))["pid"] == os.getpid()  # not declared stateless
        health = await kernel.broker.request("kernel", "health")
        assert [(p["index"], p["role"], p["state"]) for p in health["processes"]] == [
            (0, "serve", "running"), (1, "worker", "running")]


async def test_heavy_requests_of_several_clients_are_shared_and_a_lone_clients_stay_here(config_file: Path) -> None:
    """A request holding the loop 20 ms is heavy (over offload_after_us): while two clients keep the loop busy
    (more than half of the last window) the idle worker process takes some; a lone client that leaves the
    loop idle most of the time is answered here. The clients are blocking ones on threads: they ask again
    while the loop is held, as other processes would."""
    async with running(load_config(config_file)) as kernel:
        member = await _ready(kernel)
        endpoint = kernel.endpoints["broker"][0]

        def burns(n: int, pause: float) -> list[int]:
            with mdp.Client(endpoint, timeout=10) as client:
                pids = []
                for _ in range(n):
                    pids.append(client.request("ledger", "burn", {"seconds": 0.02})["pid"])
                    time.sleep(pause)
                return pids

        loop = asyncio.get_running_loop()
        alone = await loop.run_in_executor(None, burns, 6, 0.05)
        together = await asyncio.gather(*(loop.run_in_executor(None, burns, 10, 0.0) for _ in range(2)))
        assert set(alone) == {os.getpid()}
        answered = [pid for pids in together for pid in pids]
        assert answered.count(member["pid"]) >= 5 and answered.count(os.getpid()) >= 5, answered


async def test_a_state_change_reaches_every_process_before_its_reply(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        member = await _ready(kernel)
        assert kernel.broker is not None
        for value in (7, 8):
            changed = await kernel.broker.request("ledger", "set", {"value": value})
            assert changed == {"pid": os.getpid(), "value": value}
            seen = await _while_busy(kernel, "where")
            assert seen == {"pid": member["pid"], "value": value}
        await kernel.broker.request("ledger", "set_later", {"value": 9})  # changed outside an admin op

        async def worker_value() -> Any:
            return (await _while_busy(kernel, "where"))["value"] == 9

        await wait_until(worker_value, timeout=10, interval=0.1, what="the worker process reloaded the background change")


async def test_a_lost_worker_process_is_replaced_and_requests_keep_being_answered(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        member = await _ready(kernel)
        assert kernel.broker is not None and kernel.group is not None
        os.kill(member["pid"], signal.SIGKILL)
        for _ in range(20):  # meanwhile the serve process answers everything
            assert (await kernel.broker.request("ledger", "where"))["pid"] == os.getpid()
        await wait_until(lambda: kernel.group.status()[0]["restarts"] == 1, timeout=10, what="restart")
        replaced = await _ready(kernel)
        assert replaced["pid"] != member["pid"] and replaced["last_exit"] == -signal.SIGKILL
        assert (await _while_busy(kernel, "where"))["pid"] == replaced["pid"]


async def test_stop_ends_every_worker_process(config_file: Path) -> None:
    kernel = Kernel(load_config(config_file))
    try:
        await kernel.start()
        pid = (await _ready(kernel))["pid"]
    finally:
        await kernel.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def auth_config_file(config_file: Path) -> Path:
    config_file.write_text(config_file.read_text() + "\n[security]\nauth = true\n", encoding="utf-8")
    return config_file


async def test_worker_processes_join_a_broker_with_authentication_on(auth_config_file: Path) -> None:
    async with running(load_config(auth_config_file)) as kernel:
        member = await _ready(kernel)  # its READYs were admitted: the key it was given has the worker role
        assert kernel.broker is not None
        work = await asyncio.gather(*(kernel.broker.request("ledger", "work", {"seconds": 0.3}) for _ in range(2)))
        assert {w["pid"] for w in work} == {os.getpid(), member["pid"]}
        clients = kernel.security.keys.clients()
        assert [c["roles"] for c in clients.values() if c["name"] == "serve-processes"] == [["compute", "worker"]]


async def test_a_client_cannot_drive_the_worker_processes(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        member = await _ready(kernel)
        client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=5.0)
        try:
            with pytest.raises(MlpError) as refused:
                await client.request("process.1", "sync", {"service": "ledger"})
            assert refused.value.code == "forbidden"
        finally:
            client.close()
        assert kernel.broker is not None  # the serve process itself still drives it
        assert (await kernel.broker.request("process.1", "status"))["pid"] == member["pid"]
