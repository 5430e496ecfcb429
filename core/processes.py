"""``serve --processes N``: the serve process supervises N-1 worker processes on this host.

The serve process keeps the broker, the pub/sub proxy, the REST edge, the registries, pipelines and
training, and is the one writer of the data directory. Each worker process runs every actor again, as MDP
workers of the broker over an ``ipc://`` endpoint in a private run directory, and answers the ops declared
stateless (``spread``) when the broker hands them over (see `ml_processing.bus.mdp.spreading`). It reads
the data directory when it starts and takes a shard of the live symbols (`ml_processing.core.shards`), so
every live bar is handled once, by its symbol's owner.

One registry: after a state-changing (admin) op succeeds in the serve process, `ProcessGroup.sync` tells
every running worker process to reload that service before the op's reply leaves (its ``process.<i>``
service: the actor's ``on_sync`` if it has one, else a restart of its actor, which reads the new state from
disk). A worker process that cannot be synced is stopped and started again, so it never serves stale state.

A worker process that exits is started again after a backoff; its MDP workers are dropped from the broker
at once (their identities carry the process index), so only requests it held fail, ``unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_processing.bus import mdp

from .config import Config
from .log import get_logger

log = get_logger(__name__)

#: The MDP service of worker process `i`: its control ops (``sync``, ``status``).
CONTROL = "process.{index}"


def identity_prefix(index: int) -> bytes:
    """The start of every MDP worker identity of worker process `index` (the broker drops them by it)."""
    return f"p{index}.".encode()


@dataclass
class Member:
    """One worker process of the group, as the serve process sees it."""

    index: int
    process: asyncio.subprocess.Process | None = None
    state: str = "starting"  # starting -> running -> exited -> starting ...; stopped
    starts: int = 0
    last_exit: int | None = None
    started_at: float = 0.0

    def status(self, broker: mdp.Broker | None) -> dict[str, Any]:
        ready = broker is not None and broker.has_service(CONTROL.format(index=self.index))
        state = "running" if self.state == "starting" and ready else self.state
        return {"index": self.index, "pid": self.process.pid if self.process else None, "state": state,
                "restarts": max(0, self.starts - 1), "last_exit": self.last_exit,
                "uptime_s": round(time.time() - self.started_at, 3) if self.process else 0.0}


class ProcessGroup:
    """Starts, watches, syncs and stops the worker processes of one serve process."""

    def __init__(self, config: Config, count: int, *, backoff: float = 0.5, backoff_max: float = 10.0) -> None:
        self.config = config
        self._broker: mdp.Broker | None = None
        self.members = [Member(index) for index in range(1, count)]
        self.run_dir = tempfile.mkdtemp(prefix="mlp-")  # mode 0700: only this user reaches its sockets
        self.broker_endpoint = f"ipc://{self.run_dir}/broker"
        self.pub_in = f"ipc://{self.run_dir}/pub-in"
        self.pub_out = f"ipc://{self.run_dir}/pub-out"
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.keys_file: Path | None = None  # authentication on: the worker processes' client keys
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def broker(self) -> mdp.Broker:
        assert self._broker is not None, "start the group with the broker its processes join"
        return self._broker

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, broker: mdp.Broker) -> None:
        self._broker = broker
        for member in self.members:
            self._watchers.append(asyncio.create_task(self._keep(member), name=f"process-{member.index}"))

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until every worker process serves its control service; False past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.broker.has_service(CONTROL.format(index=m.index)) for m in self.members):
                return True
            await asyncio.sleep(0.05)
        return False

    async def _keep(self, member: Member) -> None:
        """Run `member`, and run it again whenever it exits, until the group stops."""
        delay = self.backoff
        while not self._stopping:
            member.starts += 1
            member.state = "starting"
            member.started_at = time.time()
            member.process = await asyncio.create_subprocess_exec(*self._command(member.index), env=self._env())
            log.info("process_started", index=member.index, pid=member.process.pid, starts=member.starts)
            code = await member.process.wait()
            member.last_exit = code
            self.broker.drop_workers(identity_prefix(member.index), reason=f"process {member.index} exited")
            if self._stopping:
                break
            member.state = "exited"
            log.error("process_exited", index=member.index, pid=member.process.pid, code=code,
                      restart_in_s=delay)
            ran = time.time() - member.started_at
            await asyncio.sleep(delay)
            delay = self.backoff if ran > 60 else min(self.backoff_max, delay * 2)
        member.state = "stopped"

    def _command(self, index: int) -> list[str]:
        command = [sys.executable, "-m", "ml_processing.core.cli", "worker", "--broker", self.broker_endpoint,
                   "--process", str(index)]
        if self.config.source != "<embedded defaults>":
            command += ["--config", self.config.source]
        return command

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(MLP_BUS_PUB_IN=self.pub_in, MLP_BUS_PUB_OUT=self.pub_out, MLP_KERNEL_PROCESSES="1",
                   MLP_SERVICE_DATA_DIR=str(self.config.data_path.resolve()))
        if self.keys_file is not None:
            env["MLP_SECURITY_CLIENT_KEYS"] = str(self.keys_file)
        return env

    # -- one registry ---------------------------------------------------------------------------------

    async def sync(self, service: str, timeout: float = 30.0) -> None:
        """Every running worker process reloads `service`'s state before this returns."""
        running = [m for m in self.members
                   if m.process is not None and self.broker.has_service(CONTROL.format(index=m.index))]
        if running:
            await asyncio.gather(*(self._sync_one(m, service, timeout) for m in running))

    async def _sync_one(self, member: Member, service: str, timeout: float) -> None:
        try:
            await self.broker.request(CONTROL.format(index=member.index), "sync", {"service": service},
                                      timeout=timeout)
        except Exception as exc:  # a process that may serve stale state is started afresh
            log.error("process_sync_failed", index=member.index, service=service, error=str(exc))
            self._kill(member)

    def _kill(self, member: Member) -> None:
        if member.process is not None and member.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                member.process.kill()
        self.broker.drop_workers(identity_prefix(member.index), reason=f"process {member.index} killed")

    # -- introspection and stop -----------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        return [m.status(self._broker) for m in self.members]

    async def stop(self, timeout: float) -> None:
        """SIGTERM every worker process (each drains its requests), then kill what is left after `timeout`."""
        self._stopping = True
        for member in self.members:
            if member.process is not None and member.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    member.process.send_signal(signal.SIGTERM)
        waits = [m.process.wait() for m in self.members if m.process is not None]
        if waits:
            _, pending = await asyncio.wait([asyncio.ensure_future(w) for w in waits], timeout=timeout)
            for member in self.members:
                if member.process is not None and member.process.returncode is None:
                    log.warning("process_killed", index=member.index, pid=member.process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        member.process.kill()
            for waiting in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for member in self.members:
            member.state = "stopped"
        shutil.rmtree(self.run_dir, ignore_errors=True)
