"""Fixtures of the bus tests: a ZeroMQ context per test and brokers started inside the test's event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import zmq.asyncio

from ml_processing.bus import mdp

from .helpers import HEARTBEAT, LIVENESS, term_context

StartBroker = Callable[..., Awaitable[mdp.Broker]]


@pytest.fixture
async def zctx() -> AsyncIterator[zmq.asyncio.Context]:
    """A fresh asyncio ZeroMQ context, destroyed after the test (failing, not hanging, on a leaked socket)."""
    ctx = zmq.asyncio.Context()
    try:
        yield ctx
    finally:
        term_context(ctx)


@pytest.fixture
async def start_broker(zctx: zmq.asyncio.Context) -> AsyncIterator[StartBroker]:
    """Start `mdp.Broker`s on the test's loop (tcp on 127.0.0.1 with a free port by default); closed after."""
    brokers: list[mdp.Broker] = []

    async def start(*endpoints: str, **options: Any) -> mdp.Broker:
        options.setdefault("heartbeat_interval", HEARTBEAT)
        options.setdefault("liveness", LIVENESS)
        options.setdefault("request_timeout", 5.0)
        broker = mdp.Broker(zctx, list(endpoints or ("tcp://127.0.0.1:*",)), **options)
        brokers.append(broker)
        await broker.start()
        return broker

    try:
        yield start
    finally:
        for broker in reversed(brokers):
            await broker.close()
