"""A trading engine on the broker host of the namespace test: it publishes bars, reads indicator updates,
and asks the symbols' state over MDP, while the test stops a worker host in between.

Run as ``python -m tests.hosts.driver CONFIG KEYS`` inside a host's namespace. It writes one JSON line per
phase to stdout, and waits for a line on stdin (the test's "the host is stopped") between the phases:

1. ``{"phase": "before", ...}``: every member up, bars 1..BEFORE handled once each;
2. after the test's line: bars keep coming every 50 ms and each symbol's state is asked once per round,
   recording which answers failed and when, until every symbol is answered and updated again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections import Counter
from typing import Any

import zmq
import zmq.asyncio

from ml_processing.bus import mdp
from ml_processing.bus.errors import MlpError
from ml_processing.bus.pubsub import Publisher, Subscriber
from ml_processing.core.config import load_config
from ml_processing.core.security.service import load_client_keys

SYMBOLS = [f"X{i}" for i in range(24)]
BEFORE = 20
#: Bounds of the second phase: rounds of bars (one every 50 ms) and seconds.
ROUNDS, SECONDS = 400, 40.0


def bar(i: int) -> dict[str, Any]:
    close = 50.0 + (i % 5) + (i % 3) * 0.25
    return {"ts": 60_000 * i, "open": close, "high": close + 1.0, "low": close - 1.0, "close": close,
            "volume": 100.0 + i, "final": True}


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def main(config_path: str, keys_path: str) -> int:
    config = load_config(config_path)
    keys = load_client_keys(keys_path)
    bus = config.bus
    ctx = zmq.asyncio.Context()
    client = mdp.AsyncClient(bus.broker_connect, timeout=1.0, context=ctx, keys=keys)
    pub = Publisher(ctx, bus.pub_in, keys=keys)
    sub = Subscriber(ctx, bus.pub_out, keys=keys)
    updates: Counter[tuple[str, int]] = Counter()
    first_after: dict[str, float] = {}
    since = [0.0]
    all_before = asyncio.Event()  # every symbol's bar BEFORE came back

    def on_updates(messages: Any) -> None:
        for topic, body in messages:
            symbol = topic.split(".")[1]
            updates[(symbol, body["ts"])] += 1
            if since[0] and symbol not in first_after:
                first_after[symbol] = time.monotonic() - since[0]
        if not all_before.is_set() and all((s, 60_000 * BEFORE) in updates for s in SYMBOLS):
            all_before.set()

    sub.subscribe_batch("indicator.", on_updates)
    sub.start()
    try:
        deadline = time.monotonic() + 60
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:  # every host has joined
            try:
                health = await client.request("kernel", "health")
                if len(health["shards"]["members"]) == 3 and not health["shards"]["moving"]:
                    break
            except MlpError:
                pass
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # the feed's sockets join
        for i in range(1, BEFORE + 1):
            for symbol in SYMBOLS:
                pub.publish(f"bar.{symbol}.1m", bar(i))
            await asyncio.sleep(0.005)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_before.wait(), 20)
        await asyncio.sleep(1.0)  # a checkpoint of every member's symbols is taken meanwhile
        proxy = (await client.request("kernel", "health"))["bus"]["proxy"]  # after the bars
        emit({"phase": "before", "members": health["shards"]["members"], "proxy": proxy,
              "handled": sum(1 for s in SYMBOLS if (s, 60_000 * BEFORE) in updates),
              "twice": sum(1 for n in updates.values() if n > 1)})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # the host is stopped
        since[0] = start = time.monotonic()
        failures: list[tuple[float, str, str]] = []
        answered: dict[str, dict[str, Any]] = {}
        i = BEFORE
        for _ in range(ROUNDS):
            if time.monotonic() - start > SECONDS:
                break
            i += 1
            for symbol in SYMBOLS:
                pub.publish(f"bar.{symbol}.1m", bar(i))
            for symbol in SYMBOLS:
                try:
                    answered[symbol] = await client.request("indicators", "state",
                                                            {"symbol": symbol, "timeframe": "1m"})
                except MlpError as exc:
                    failures.append((round(time.monotonic() - start, 3), symbol, exc.code))
            if (len(answered) == len(SYMBOLS) and len(first_after) == len(SYMBOLS)
                    and (not failures or time.monotonic() - start > failures[-1][0] + 2.0)):
                break
            await asyncio.sleep(0.05)
        health = await client.request("kernel", "health")
        emit({"phase": "after", "members": health["shards"]["members"], "failures": failures,
              "last_bar": i, "first_update_s": first_after,
              "state": {s: {"bars": a["bars"], "ts": a["ts"]} for s, a in answered.items()},
              "twice": sum(1 for n in updates.values() if n > 1)})
        return 0
    finally:
        client.close()
        sub.close()
        pub.close()
        ctx.destroy(linger=0)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
