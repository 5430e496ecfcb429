"""Live series sharded by symbol: each bar is handled once, by its symbol's owner; ops on a symbol's state
reach its owner; a lost process's symbols continue from their last checkpoint and move back when it returns.

Real processes: the serve kernel runs here with one worker process of its own (``serve --processes 2``);
bars go in and indicator updates come out over the service's real pub/sub sockets."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio
from hypothesis import given
from hypothesis import strategies as st

from ml_processing.bus.shards import Shards, owner
from ml_processing.core.config import load_config
from ml_processing.core.kernel import Kernel
from tests.core.helpers import running
from tests.support.groups import group_config
from tests.support.waiting import wait_until

SYMBOLS = [f"S{i}" for i in range(16)]
OFF = ("features", "models", "patterns", "sentiment", "replay")
MEMBERS = ("process.1", "serve")
CONTROL_OF_WORKER = "process.1"

names = st.text(st.sampled_from("abcXYZ019-_"), min_size=1, max_size=8)


@given(st.lists(names, min_size=1, max_size=6, unique=True), names, st.lists(names, min_size=1, max_size=30))
def test_a_member_that_joins_only_takes_symbols_and_one_that_leaves_only_gives_its_own(
        members: list[str], joining: str, symbols: list[str]) -> None:
    if joining in members:
        return
    before = {s: owner(s, members) for s in symbols}
    after = {s: owner(s, [*members, joining]) for s in symbols}
    assert all(after[s] in (before[s], joining) for s in symbols)  # nothing moves between the others
    again = {s: owner(s, members) for s in symbols}
    assert again == before  # and when it leaves, exactly its symbols go back where they were
    assert {s: owner(s, list(reversed(members))) for s in symbols} == before  # order of the list is no matter


def test_a_process_owns_nothing_until_told_and_frozen_symbols_are_nobodys() -> None:
    view = Shards("process.1", [])
    assert not view.owns("AAPL") and not view.owns(None)
    view.update(3, ["serve", "process.1"], frozen={"AAPL"})
    mine = [s for s in SYMBOLS if view.owns(s)]
    assert mine == [s for s in SYMBOLS if owner(s, ["serve", "process.1"]) == "process.1"]
    assert not view.owns("AAPL") and not view.owns(None)  # symbol-less topics belong to the serve process
    view.thaw()
    assert view.owns("AAPL") == (owner("AAPL", ["serve", "process.1"]) == "process.1")


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return group_config(tmp_path, monkeypatch, """
[plugins.indicators]
live = ["SMA(timeperiod=5)"]
buffer = 500
timeframes = []
""" + "".join(f"\n[plugins.{name}]\nenabled = false\n" for name in OFF), kernel="shard_checkpoint_s = 0.3\nshard_page = 3")


def bar(i: int) -> dict[str, Any]:
    close = 100.0 + (i % 7) - (i % 3) * 0.5
    return {"ts": 60_000 * i, "open": close - 0.2, "high": close + 1.0, "low": close - 1.0, "close": close,
            "volume": 1000.0 + i, "final": True}


class Feed:
    """A feed publishing bars and a reader counting the indicator updates, over the service's sockets."""

    def __init__(self, kernel: Kernel) -> None:
        self.ctx = zmq.asyncio.Context()
        self.pub, self.sub = self.ctx.socket(zmq.PUB), self.ctx.socket(zmq.SUB)
        self.pub.connect(kernel.endpoints["pub_in"][0])
        self.sub.connect(kernel.endpoints["pub_out"][0])
        self.sub.setsockopt(zmq.SUBSCRIBE, b"indicator.")
        self.updates: Counter[tuple[str, int]] = Counter()

    async def publish(self, first: int, last: int) -> None:
        for i in range(first, last + 1):
            for symbol in SYMBOLS:
                await self.pub.send_multipart([f"bar.{symbol}.1m".encode(), msgpack.packb(bar(i))])
            await asyncio.sleep(0.002)

    async def read(self, until: int, timeout: float = 20.0) -> None:
        """Read updates until every symbol's bar `until` came back (bounded in time)."""
        async def done() -> bool:
            while await self.sub.poll(0):
                topic, body = await self.sub.recv_multipart()
                self.updates[(topic.decode().split(".")[1], msgpack.unpackb(body)["ts"])] += 1
            return all((s, 60_000 * until) in self.updates for s in SYMBOLS)
        await wait_until(done, timeout=timeout, interval=0.02, what=f"updates up to bar {until}")

    def close(self) -> None:
        self.ctx.destroy(linger=0)


async def _fed(kernel: Kernel, first: int, last: int) -> Counter[tuple[str, int]]:
    """Bars `first`..`last` of every symbol published and their updates read back: the updates counted."""
    feed = Feed(kernel)
    try:
        await asyncio.sleep(0.5)  # the feed's sockets join
        await feed.publish(first, last)
        await feed.read(last)
    finally:
        feed.close()
    return feed.updates


async def _members(kernel: Kernel, members: tuple[str, ...], timeout: float = 60.0) -> None:
    assert kernel.keeper is not None
    keeper = kernel.keeper
    await wait_until(lambda: keeper.members == members and not keeper.moving, timeout=timeout,
                     what=f"members {members}")


async def _state(kernel: Kernel, symbol: str) -> dict[str, Any]:
    state: dict[str, Any] = await kernel.request("indicators", "state", {"symbol": symbol, "timeframe": "1m"})
    return state


async def test_each_bar_is_handled_once_by_its_symbols_owner_and_state_ops_reach_it(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        await _members(kernel, MEMBERS)
        theirs = [s for s in SYMBOLS if owner(s, MEMBERS) == "process.1"]
        assert theirs and len(theirs) < len(SYMBOLS)  # both processes own some of the 16
        feed = Feed(kernel)
        try:
            await asyncio.sleep(0.5)  # the feed's sockets join
            await feed.publish(1, 30)
            await feed.read(30)
            await asyncio.sleep(0.3)  # a second update of any bar would have come by now
            await feed.read(30, timeout=1)
        finally:
            feed.close()
        assert max(feed.updates.values()) == 1, [k for k, n in feed.updates.items() if n > 1][:5]
        assert kernel.member.skipped >= 30 * len(theirs)  # the serve process left those to process.1
        for symbol in SYMBOLS:  # answered by each symbol's owner: it holds every bar
            state = await _state(kernel, symbol)
            assert (state["bars"], state["ts"]) == (30, 60_000 * 30), symbol
        assert sorted(s["symbol"] for s in await kernel.request("indicators", "series")) == sorted(SYMBOLS)
        mine = [s for s in SYMBOLS if s not in theirs]
        assert sorted(kernel.cells["indicators"].instance.shard_symbols()) == sorted(mine)  # type: ignore[union-attr]
        health = await kernel.request("kernel", "health")
        assert health["shards"]["members"] == list(MEMBERS) and health["shards"]["epoch"] >= 2


async def test_a_lost_process_symbols_continue_from_their_checkpoint_and_move_back(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        assert kernel.group is not None and kernel.keeper is not None
        keeper = kernel.keeper
        await _members(kernel, MEMBERS)
        theirs = [s for s in SYMBOLS if owner(s, MEMBERS) == "process.1"]
        feed = Feed(kernel)
        try:
            await asyncio.sleep(0.5)
            await feed.publish(1, 20)
            await feed.read(20)
            saved = keeper.checkpoints
            await wait_until(lambda: keeper.checkpoints >= saved + 2, timeout=10, what="a checkpoint after bar 20")
            pid = kernel.group.status()[0]["pid"]
            os.kill(pid, signal.SIGKILL)
            await _members(kernel, ("serve",), timeout=20)  # its symbols moved here, from the checkpoint
            for symbol in theirs:
                assert (await _state(kernel, symbol))["ts"] == 60_000 * 20
            await feed.publish(21, 30)
            await feed.read(30)
            assert sorted(kernel.cells["indicators"].instance.shard_symbols()) == sorted(SYMBOLS)  # type: ignore[union-attr]
            for symbol in theirs:
                assert (await _state(kernel, symbol))["bars"] == 30  # 20 from the checkpoint, 10 handled here
            await _members(kernel, MEMBERS)  # the process was started again and took its symbols back
            assert kernel.group.status()[0]["pid"] != pid
            await feed.publish(31, 35)
            await feed.read(35)
        finally:
            feed.close()
        assert max(feed.updates.values()) == 1
        for symbol in theirs:
            state = await _state(kernel, symbol)
            assert (state["bars"], state["ts"]) == (35, 60_000 * 35), symbol
        instance = kernel.cells["indicators"].instance
        assert instance is not None and not set(instance.shard_symbols()) & set(theirs)


async def test_a_restart_finds_every_symbol_where_it_was_whoever_held_it(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        await _members(kernel, MEMBERS)
        await _fed(kernel, 1, 12)
    # stopped: the serve process saved its own series, and the worker process's were checkpointed first
    async with running(load_config(config_file)) as kernel:
        await _members(kernel, MEMBERS)
        for symbol in SYMBOLS:
            state = await _state(kernel, symbol)
            assert (state["bars"], state["ts"]) == (12, 60_000 * 12), symbol
        assert max((await _fed(kernel, 13, 15)).values()) == 1
        for symbol in SYMBOLS:
            assert (await _state(kernel, symbol))["bars"] == 15, symbol


async def test_an_op_over_every_series_reaches_every_process_and_keeps_their_series(config_file: Path) -> None:
    async with running(load_config(config_file)) as kernel:
        await _members(kernel, MEMBERS)
        await _fed(kernel, 1, 10)
        added = await kernel.request("indicators", "subscribe", {"indicators": ["EMA(timeperiod=3)"]})
        assert added == {"series": len(SYMBOLS), "indicators": ["EMA_3"]}  # both processes' series, merged
        for symbol in SYMBOLS:
            state = await _state(kernel, symbol)
            assert state["bars"] == 10 and state["values"]["EMA_3"] is not None, (symbol, state)
        await _fed(kernel, 11, 11)
        for symbol in SYMBOLS:
            assert (await _state(kernel, symbol))["bars"] == 11, symbol


async def test_generated_requests_on_other_processes_symbols_get_clear_errors_and_crash_nothing(
        config_file: Path) -> None:
    """Requests forwarded to the symbol's owner, with generated arguments: every answer is a value or an
    error naming a field (never ``internal``), and no actor restarts in either process."""
    import random

    from ml_processing.bus.errors import InternalError, MlpError

    rnd = random.Random(7)
    values: list[Any] = [None, True, 0, -1, 2**40, 1.5, float("nan"), "", "1m", "5m", "bad tf", "S1", [], {},
                         ["x"], {"a": 1}, "x" * 300]
    async with running(load_config(config_file)) as kernel:
        await _members(kernel, MEMBERS)
        await _fed(kernel, 1, 5)
        theirs = [s for s in SYMBOLS if owner(s, MEMBERS) == "process.1"]
        refused = 0
        for _ in range(300):
            op = rnd.choice(["state", "bars", "timeframes", "ingest", "subscribe", "unsubscribe"])
            args: dict[str, Any] = {"symbol": rnd.choice([*theirs, *theirs, "bad symbol!", 7, None])}
            for name in rnd.sample(["timeframe", "limit", "peek", "indicators", "close", "extra"], rnd.randint(0, 3)):
                args[name] = rnd.choice(values)
            try:
                await kernel.request("indicators", op, args)
            except InternalError as exc:
                pytest.fail(f"{op} {args!r:.200} -> internal: {exc.message}")
            except MlpError as exc:
                assert exc.code in ("bad_request", "not_found", "too_large"), (op, args, exc.code, exc.message)
                refused += 1
        assert refused > 100  # most generated requests are wrong in some field
        # the worker's control service declares its arguments too: one field made wrong is refused by name
        valid: dict[str, dict[str, Any]] = {
            "shards_release": {"epoch": 1, "members": ["serve"], "moving": []}, "shards_take": {"symbols": []},
            "shards_acquire": {"epoch": 1, "states": {}, "last": True}, "shards_checkpoint": {"offset": 0, "limit": 3},
            "sync": {"service": "indicators"}, "call": {"service": "indicators", "op": "series"}}
        wrong: list[Any] = [None, "x", -1, 1.5, [1], {"a": 1}, True]
        for _ in range(60):
            op = rnd.choice(sorted(valid))
            field = rnd.choice(sorted(valid[op]))
            value = rnd.choice([w for w in wrong if type(w) is not type(valid[op][field])
                                and not (field == "limit" and w is None)])
            with pytest.raises(MlpError) as refusal:
                await kernel.request(CONTROL_OF_WORKER, op, {**valid[op], field: value})
            assert (refusal.value.code, refusal.value.field) == ("bad_request", field), (op, field, value)
        health = await kernel.request("kernel", "health")
        assert all(a["restarts"] == 0 and a["state"] == "running" for a in health["actors"].values())
        status = await kernel.request(CONTROL_OF_WORKER, "status")
        assert all(a["restarts"] == 0 and a["state"] == "running" for a in status["actors"].values())
        for symbol in theirs:  # the worker's series are intact
            assert (await _state(kernel, symbol))["ts"] >= 60_000 * 5
