"""Helpers for the bus tests: bounded waiting, raw MDP peers on plain DEALER sockets, worker lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import zmq
import zmq.asyncio

from ml_processing.bus import codec, mdp
from tests.support.waiting import wait_until

#: Heartbeats fast enough to keep the suite quick, slow enough for a busy 2-core machine.
HEARTBEAT = 0.1
LIVENESS = 5


async def recv(sock: zmq.asyncio.Socket, timeout: float = 3.0) -> list[bytes]:
    """One multipart message, or an AssertionError after `timeout` seconds."""
    if not await sock.poll(int(timeout * 1000), zmq.POLLIN):  # type: ignore[call-arg]
        raise AssertionError(f"no message within {timeout}s")
    return await sock.recv_multipart()


async def nothing_within(sock: zmq.asyncio.Socket, timeout: float) -> bool:
    """True when no message arrives on `sock` within `timeout` seconds."""
    return not await sock.poll(int(timeout * 1000), zmq.POLLIN)  # type: ignore[call-arg]


def dealer(ctx: zmq.asyncio.Context, endpoint: str, *, identity: bytes | None = None) -> zmq.asyncio.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.connect(endpoint)
    return sock


def rfc_request(service: bytes, body: bytes) -> list[bytes]:
    """An RFC 18 client REQUEST: no delimiter, command 0x01."""
    return [b"MDPC02", b"\x01", service, body]


class RawWorker:
    """An RFC 18 worker on a plain DEALER socket, driven step by step by the test (no automatic heartbeats)."""

    def __init__(self, ctx: zmq.asyncio.Context, endpoint: str, service: bytes) -> None:
        self.sock = dealer(ctx, endpoint)
        self.service = service
        self.heartbeats = 0

    async def ready(self) -> None:
        await self.sock.send_multipart([b"MDPW02", b"\x01", self.service])

    async def next_request(self, timeout: float = 3.0) -> list[bytes]:
        """The next REQUEST (heartbeats are counted and skipped); bounded by `timeout` overall."""
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            frames = await recv(self.sock, max(0.01, deadline - time.monotonic()))
            if frames[:2] == [b"MDPW02", b"\x05"]:
                self.heartbeats += 1
                continue
            return frames
        raise AssertionError("only heartbeats arrived")

    async def reply(self, client: bytes, body: bytes, *, command: bytes = b"\x04") -> None:
        await self.sock.send_multipart([b"MDPW02", command, client, b"", body])

    async def heartbeat(self) -> None:
        await self.sock.send_multipart([b"MDPW02", b"\x05"])

    def close(self) -> None:
        self.sock.close(linger=0)


def echo(request: codec.Request) -> Any:
    """A synchronous local service: echoes op and args, fails on demand."""
    if request.op == "fail":
        raise RuntimeError("failed on purpose")
    return {"op": request.op, "args": request.args}


class Gate:
    """An async local service that holds every request until `open` is called (drain, timeouts)."""

    def __init__(self) -> None:
        self.entered = 0
        self._open = asyncio.Event()

    def open(self) -> None:
        self._open.set()

    async def __call__(self, request: codec.Request) -> Any:
        self.entered += 1
        await self._open.wait()
        return {"released": request.args.get("n")}


@contextlib.asynccontextmanager
async def running_workers(workers: list[mdp.Worker], broker: mdp.Broker | None = None,
                          service: str | None = None) -> AsyncIterator[list[mdp.Worker]]:
    """Run `workers`; when `broker` is given, wait until it knows all of them; stop them all on exit."""
    tasks = [asyncio.create_task(w.run(), name=f"worker-{w.service}-{i}") for i, w in enumerate(workers)]
    try:
        if broker is not None and service is not None:
            await wait_until(lambda: broker.services().get(service, {}).get("workers") == len(workers),
                             what=f"{len(workers)} workers of {service!r} registered")
        yield workers
    finally:
        for w in workers:
            w.stop()
        done, pending = await asyncio.wait(tasks, timeout=5.0)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


def term_context(ctx: zmq.Context[Any], timeout: float = 5.0) -> None:
    """Destroy `ctx`; fail (rather than hang the suite) when a socket of a shadow context was left open."""
    for sock in list(getattr(ctx, "_sockets", ())):  # sockets made through `ctx` itself: close them here,
        if not sock.closed:                           # on the loop's thread
            sock.close(linger=0)
    finished = threading.Event()

    def term() -> None:
        ctx.term()
        finished.set()

    thread = threading.Thread(target=term, name="zmq-term", daemon=True)
    thread.start()
    thread.join(timeout)
    assert finished.is_set(), "zmq context did not terminate: a socket was left open"
