#!/usr/bin/env python3
"""The live indicator path: one bar published -> every configured indicator updated -> published.

``ml-processing serve`` runs with 20 live indicators. A feed process publishes ``bar.SYM.1m`` to the pub/sub
input and a subscriber on the output receives ``indicator.SYM.1m``.

1. Latency: one bar at a time, publish -> update received (the clock is the client's; both ends are in
   this process). Target: p50 under 300 us.
(Resampling into higher timeframes is off here, so each bar yields exactly one update.)
2. Throughput: 100 symbols, bars published in bursts of 200 and each burst's updates awaited, bounded in
   count and time. Target: at least 20,000 bars/s.
Reference in the same run: the same 20 indicators updated in-process through their stream handles (the
compute alone, no transport).

    python bench/bench_live.py [--repeat 3] [--bars 3000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from ml_processing.plugins.indicators.market import Live, Series, check_bar
from ml_processing.plugins.indicators.talib_indicators import talib_indicators

LIVE = ["SMA(timeperiod=20)", "SMA(timeperiod=50)", "EMA(timeperiod=12)", "EMA(timeperiod=26)", "WMA(timeperiod=20)",
        "DEMA(timeperiod=20)", "TEMA(timeperiod=20)", "KAMA(timeperiod=30)", "RSI(timeperiod=14)", "MACD",
        "BBANDS(timeperiod=20)", "ATR(timeperiod=14)", "NATR(timeperiod=14)", "ADX(timeperiod=14)",
        "CCI(timeperiod=14)", "MFI(timeperiod=14)", "OBV", "STOCH", "WILLR(timeperiod=14)", "ROC(timeperiod=10)"]
TOML = "\n[plugins.indicators]\nlive = [{}]\npersist = false\ntimeframes = []\n".format(", ".join(f'"{s}"' for s in LIVE))


def make_bars(n: int, seed: int = 5) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    out = []
    for i, c in enumerate(close):
        o = close[i - 1] if i else c
        out.append({"ts": 60_000 * (i + 1), "open": float(o), "high": float(max(o, c) * 1.001),
                    "low": float(min(o, c) * 0.999), "close": float(c), "volume": float(rng.uniform(1e3, 1e4))})
    return out


def reference(bars: list[dict[str, float]]) -> dict[str, float]:
    registry = {i.name: i for i in talib_indicators()}
    series = Series("REF", "1m", 5000)
    for spec in LIVE:
        series.add(Live.parse(spec, registry))
    checked = [check_bar(b) for b in bars]
    for bar in checked[:200]:
        series.on_bar(bar)
    samples = []
    for bar in checked[200:]:
        t = time.perf_counter_ns()
        series.on_bar(bar)
        samples.append(time.perf_counter_ns() - t)
    return C.summarize_ns(samples)


def latency(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], bars: list[dict[str, float]]) -> dict[str, float]:
    samples = []
    deadline = time.monotonic() + 60
    for bar in bars:
        t = time.perf_counter_ns()
        pub.send_multipart([b"bar.LAT.1m", msgpack.packb(bar)])
        for _ in range(100):  # the update for this bar, not a stray earlier message
            if not sub.poll(2000):
                raise SystemExit("an indicator update did not arrive within 2 s")
            topic, body = sub.recv_multipart()
            if topic == b"indicator.LAT.1m" and msgpack.unpackb(body)["ts"] == bar["ts"]:
                break
        else:
            raise SystemExit("the update of a bar never arrived")
        samples.append(time.perf_counter_ns() - t)
        if time.monotonic() > deadline:
            break
    return C.summarize_ns(samples[200:])


def throughput(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], bars: list[dict[str, float]],
               symbols: int, burst: int) -> dict[str, float]:
    topics = [f"bar.S{i:03d}.1m".encode() for i in range(symbols)]
    payloads = [msgpack.packb(b) for b in bars]
    sent = received = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + 30
    for start in range(0, len(payloads), max(1, burst // symbols)):
        for payload in payloads[start:start + max(1, burst // symbols)]:
            for topic in topics:
                pub.send_multipart([topic, payload])
                sent += 1
        while received < sent:
            if not sub.poll(2000):
                raise SystemExit(f"updates stalled at {received} of {sent}")
            sub.recv_multipart()
            received += 1
        if time.monotonic() > deadline:
            break
    elapsed = time.perf_counter() - t0
    return {"bars": float(received), "seconds": elapsed, "bars_per_s": received / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bars", type=int, default=3000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    runs = []
    with C.Service(extra_toml=TOML) as svc:
        ctx = zmq.Context()
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        for sock in (pub, sub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 1_000_000)
            sock.setsockopt(zmq.RCVHWM, 1_000_000)
        pub.connect(f"tcp://{C.HOST}:{svc.pub_in_port}")
        sub.connect(f"tcp://{C.HOST}:{svc.pub_out_port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"indicator.")
        probe = make_bars(1)[0]
        for _ in range(200):  # slow joiner, bounded
            pub.send_multipart([b"bar.PROBE.1m", msgpack.packb(probe)])
            if sub.poll(50):
                sub.recv_multipart()
                break
        for repeat in range(1, args.repeat + 1):
            bars = make_bars(args.bars, seed=repeat)
            for bar in bars:
                bar["ts"] += repeat * 10**9  # newer than every earlier repeat's bars
            run = {"reference": reference(bars), "latency": latency(pub, sub, bars),
                   "throughput": throughput(pub, sub, bars[: max(20, 20_000 // args.symbols)], args.symbols,
                                            args.burst)}
            runs.append(run)
            print(f"repeat {repeat}: compute only p50 {run['reference']['p50_us']:.1f} us; bar -> update p50 "
                  f"{run['latency']['p50_us']:.0f} us p99 {run['latency']['p99_us']:.0f} us; "
                  f"{run['throughput']['bars_per_s']:,.0f} bars/s over {args.symbols} symbols")
        pub.close(0)
        sub.close(0)
        ctx.term()
    ref = C.median(r["reference"]["p50_us"] for r in runs)
    p50 = C.median(r["latency"]["p50_us"] for r in runs)
    p99 = C.median(r["latency"]["p99_us"] for r in runs)
    rate = C.median(r["throughput"]["bars_per_s"] for r in runs)
    print(f"\n{len(LIVE)} live indicators; medians of {len(runs)} repeats")
    C.print_table(["measure", "value"], [("20 indicators updated in-process (reference), p50", f"{ref:.1f} us"),
                                         ("bar published -> indicator update received, p50", f"{p50:.0f} us"),
                                         ("same, p99", f"{p99:.0f} us"),
                                         (f"throughput over {args.symbols} symbols", f"{rate:,.0f} bars/s")])
    print(f"\n[{'PASS' if p50 < 300 else 'FAIL'}] live path p50 under 300 us: {p50:.0f} us")
    print(f"[{'PASS' if rate >= 20_000 else 'FAIL'}] at least 20,000 bars/s across {args.symbols} symbols: {rate:,.0f}")
    C.write_results("bench_live", {"params": vars(args), "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
