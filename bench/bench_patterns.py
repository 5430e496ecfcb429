#!/usr/bin/env python3
"""Candlestick patterns: all 61 of TA-Lib's, in the actor, over REST and live, against TA-Lib in the same run.

1. In the actor: the 61 patterns on 10,000 bars as the ``patterns`` service detects them (TA-Lib's call
   per pattern, then the events), against the same 61 TA-Lib calls made directly. Target: within 1.2x.
2. ``POST /api/v1/patterns/detect`` with every pattern on 10,000 bars (JSON, one client), p50. Target:
   under 25 ms.
3. Live: one bar published on ``bar.SYM.1m`` with every pattern live (61 candlestick, 10 chart) -> the ``pattern.SYM.1m`` events of
   that bar received (bars that confirm at least one pattern), p50. Target: under 1 ms. Reference: the
   raw pyzmq forwarder of bench_live.py under the same feed.

    python bench/bench_patterns.py [--repeat 3] [--iterations 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import talib
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_indicators as I
import bench_live as L

from ml_processing.plugins.patterns.actor import detect_grouped
from ml_processing.plugins.patterns.candles import candlesticks

TOML = """
[plugins.indicators]
live = []
persist = false
timeframes = []

[plugins.features]
live = []

[plugins.sentiment]
live_market = false

[plugins.models]
defaults = false
live = []
"""


def live_latency(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], bars: list[dict[str, Any]],
                 expect: set[int]) -> dict[str, float]:
    """Per bar that confirms a pattern: publish it, wait for its pattern event message."""
    samples = []
    deadline = time.monotonic() + 60
    for i, bar in enumerate(bars):
        t = time.perf_counter_ns()
        pub.send_multipart([b"bar.SYM.1m", msgpack.packb(bar)])
        if i not in expect:
            continue
        while True:
            if not sub.poll(2000):
                raise SystemExit(f"no pattern events for bar {i} within 2 s")
            _, body = sub.recv_multipart()
            if msgpack.unpackb(body)["ts"] == bar["ts"]:
                samples.append(time.perf_counter_ns() - t)
                break
        if time.monotonic() > deadline:
            break
    return C.summarize_ns(samples[20:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--bars", type=int, default=1500)
    args = parser.parse_args()
    patterns = candlesticks()
    chosen = [(p, p.resolve({})) for p in patterns]
    data = {k: v for k, v in I.series(10_000).items() if k != "volume"}
    ohlc = [data[k] for k in ("open", "high", "low", "close")]
    funcs = [getattr(talib, p.name) for p in patterns]
    body = json.dumps({k: v.tolist() for k, v in data.items()}).encode()
    runs = []
    with C.Service(extra_toml=TOML, start_timeout=120) as svc, C.ProcessGroup() as group:
        url = svc.edge_url + "/api/v1/patterns/detect"

        def rest() -> None:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as resp:
                resp.read()

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        raw_in, raw_out = C.free_ports(2)
        forwarder = group.start([C.PYTHON, "-c", L.FORWARDER, f"tcp://{C.HOST}:{raw_in}", f"tcp://{C.HOST}:{raw_out}"],
                                stdout=subprocess.PIPE, text=True)
        assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == "ready"
        raw = L.connect(ctx, raw_in, raw_out)
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        for sock in (pub, sub):
            sock.setsockopt(zmq.LINGER, 0)
        pub.connect(f"tcp://{C.HOST}:{svc.pub_in_port}")
        sub.connect(f"tcp://{C.HOST}:{svc.pub_out_port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"pattern.SYM.")
        time.sleep(0.5)
        for repeat in range(1, args.repeat + 1):
            live_data = I.series(args.bars, seed=40 + repeat)
            bars = [{"ts": repeat * 10**10 + 60_000 * i, **{k: float(live_data[k][i]) for k in live_data}}
                    for i in range(args.bars)]
            events = detect_grouped(chosen, {k: live_data[k] for k in ("open", "high", "low", "close")}, None)
            expect = {int(i) for group in events.values() for i in group["index"]}
            run = {"talib": C.timed(lambda: [f(*ohlc) for f in funcs], args.iterations),
                   "actor": C.timed(lambda: detect_grouped(chosen, data, None), args.iterations),
                   "rest": C.timed(rest, args.iterations),
                   "raw_live": L.latency(*raw, bars),
                   "live": live_latency(pub, sub, bars, expect)}
            runs.append(run)
            print(f"repeat {repeat}: TA-Lib {run['talib']['p50_us']:.0f} us, actor {run['actor']['p50_us']:.0f} us, "
                  f"REST {run['rest']['p50_us'] / 1000:.1f} ms, live p50 {run['live']['p50_us']:.0f} us "
                  f"(raw forwarder {run['raw_live']['p50_us']:.0f} us)")
        for sock in (pub, sub, *raw):
            sock.close(0)
        ctx.term()
    med = {k: C.median(r[k]["p50_us"] for r in runs) for k in runs[0]}
    print(f"\n61 candlestick patterns; medians of {len(runs)} repeats")
    C.print_table(["measure", "reference", "ours", "ratio"], [
        ("10,000 bars in the actor", f"{med['talib']:,.0f} us (TA-Lib direct)", f"{med['actor']:,.0f} us",
         f"{med['actor'] / med['talib']:.2f}"),
        ("POST /api/v1/patterns/detect, 10,000 bars", "", f"{med['rest'] / 1000:.1f} ms", ""),
        ("live: bar -> pattern events, p50", f"{med['raw_live']:.0f} us (raw forwarder)", f"{med['live']:.0f} us",
         f"{med['live'] / med['raw_live']:.2f}")])
    print()
    verdicts = [
        C.verdict("patterns: 61 candlestick patterns on 10,000 bars in the actor within 1.2x of TA-Lib",
                  med["actor"] / med["talib"] <= 1.2, f"{med['actor'] / med['talib']:.2f}x"),
        C.verdict("patterns: POST /api/v1/patterns/detect, all patterns, 10,000 bars, p50 < 25 ms",
                  med["rest"] < 25_000, f"{med['rest'] / 1000:.1f} ms (61 candlestick and 10 chart patterns)"),
        C.verdict("patterns: live bar -> events p50 < 1 ms", med["live"] < 1000, f"{med['live']:.0f} us"),
    ]
    C.write_results("bench_patterns", {"params": vars(args), "runs": runs, "verdicts": verdicts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
