"""A client on the broker host of the namespace test: it changes the ledger plugin's value through the serve
process and asks, while the serve process is busy, what the worker host (which reads the same data directory)
answers. Run as ``python -m tests.hosts.ledger_client CONFIG KEYS``; writes one JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import zmq.asyncio

from ml_processing.bus import mdp
from ml_processing.bus.errors import MlpError
from ml_processing.core.config import load_config
from ml_processing.core.security.service import load_client_keys


async def main(config_path: str, keys_path: str) -> int:
    config = load_config(config_path)
    keys = load_client_keys(keys_path)
    ctx = zmq.asyncio.Context()
    asking, busy = (mdp.AsyncClient(config.bus.broker_connect, timeout=10, context=ctx, keys=keys) for _ in range(2))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = await asking.request("kernel", "health")
                if len(health["shards"]["members"]) == 2:
                    break
            except MlpError:
                pass
            await asyncio.sleep(0.1)
        owner = await asking.request("ledger", "owner")
        seen: list[dict[str, Any]] = []
        for value in (7, 8):
            await asking.request("ledger", "set", {"value": value})
            working = asyncio.ensure_future(busy.request("ledger", "work", {"seconds": 0.5}))
            await asyncio.sleep(0.05)
            seen.append(await asking.request("ledger", "where"))  # the serve process is busy: the host answers
            await working
        sys.stdout.write(json.dumps({"serve_pid": owner["pid"], "seen": seen}) + "\n")
        return 0
    finally:
        asking.close()
        busy.close()
        ctx.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
