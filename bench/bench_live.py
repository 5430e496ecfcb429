#!/usr/bin/env python3
"""The live indicator path: one bar published -> every configured indicator updated -> published.

``ml-processing serve`` runs with 20 live indicators. A feed process publishes ``bar.SYM.1m`` to the pub/sub
input and a subscriber on the output receives ``indicator.SYM.1m``.

1. Latency: one bar at a time, publish -> update received (the clock is the client's; both ends are in
   this process). Targets: p50 under 300 us, and within 1.4x of the raw forwarder's p50 (same run).
(Resampling into higher timeframes is off here, so each bar yields exactly one update.)
2. Throughput: 100 symbols, bars published in bursts of 200 and each burst's updates awaited, bounded in
   count and time; in `--rounds` rounds per repeat (default 7) of 20,000 bars, ours and the raw forwarder
   back to back in each, the ratio being the median of the rounds' ratios. Targets: at least 20,000
   bars/s, and at least 0.6x the raw forwarder's (same run).
Reference in the same run: the same 20 indicators updated in-process through their stream handles (the
compute alone, no transport), and a raw pyzmq forwarder process (SUB in, unpack, pack a same-sized update,
PUB out, nothing else) under the same two loads: the transport's own floor on this machine.
3. Per update, in-process: each indicator TA-Lib lacks (``ICHIMOKU``, ``VWAP_SESSION``) and a few TA-Lib ones
   through our stream wrapper, against TA-Lib's own ``SMA`` stream handle called directly. Target for
   ours: under 2 us each.

4. Per committed bar, in-process, with 10, 100 and 1,000 symbols in one process and their bars round robin:
   what the number of symbols a process holds costs each of them (information; docs/SCALING.md).

5. ``--instructions`` (instead of 1-4): instructions per bar of the service process and of the raw forwarder,
   counted by callgrind over the throughput load (100 symbols x 20 bars, after 100 warm-up bars each): what
   the machine's load does not move. Takes a few minutes (the service starts under valgrind).

    python bench/bench_live.py [--repeat 3] [--bars 3000]
    python bench/bench_live.py --instructions [--warm 100] [--measure 20]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import talib
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from ml_processing.plugins.indicators import builtin_indicators
from ml_processing.plugins.indicators.market import Live, Series
from ml_processing.plugins.indicators.talib_indicators import talib_indicators
from ml_processing.sdk.bars import check_bar

LIVE = ["SMA(timeperiod=20)", "SMA(timeperiod=50)", "EMA(timeperiod=12)", "EMA(timeperiod=26)", "WMA(timeperiod=20)",
        "DEMA(timeperiod=20)", "TEMA(timeperiod=20)", "KAMA(timeperiod=30)", "RSI(timeperiod=14)", "MACD",
        "BBANDS(timeperiod=20)", "ATR(timeperiod=14)", "NATR(timeperiod=14)", "ADX(timeperiod=14)",
        "CCI(timeperiod=14)", "MFI(timeperiod=14)", "OBV", "STOCH", "WILLR(timeperiod=14)", "ROC(timeperiod=10)"]
TOML = ("\n[plugins.indicators]\nlive = [{}]\npersist = false\ntimeframes = []\n"
        "[plugins.features]\nlive = []\n[plugins.models]\ndefaults = false\nlive = []\n"  # the indicators alone:
        "[plugins.patterns]\nlive = []\n[plugins.sentiment]\nlive_market = false\n"  # nothing else on each bar
        ).format(", ".join(f'"{s}"' for s in LIVE))


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


UNIVERSES = (10, 100, 1000)


def universe_costs(total: int = 20_000, warmup: int = 200, buffer: int = 5000) -> dict[str, float]:
    """Mean microseconds per committed bar of `Series.on_bar` with the 20 `LIVE` indicators, in-process,
    when a process holds 10, 100 or 1,000 symbols and their bars come round robin (as a feed's do): `total`
    bars after `warmup` per symbol, each series with the service's default buffer of bars.

    The compute does not change with the number of symbols, the memory a bar touches does: each of its
    20 TA-Lib stream states and their Python objects, cold again when every other symbol's bar came in
    between. What a symbol costs in a process grows with the symbols that process holds."""
    registry = {i.name: i for i in talib_indicators()}
    out: dict[str, float] = {}
    for n in UNIVERSES:
        bars = [check_bar(b) for b in make_bars(warmup + total // n, seed=n)]
        universe = []
        for i in range(n):
            series = Series(f"U{i}", "1m", buffer)
            for spec in LIVE:
                series.add(Live.parse(spec, registry))
            universe.append(series)
        for bar in bars[:warmup]:
            for series in universe:
                series.on_bar(bar)
        t = time.perf_counter_ns()
        for bar in bars[warmup:]:
            for series in universe:
                series.on_bar(bar)
        out[str(n)] = (time.perf_counter_ns() - t) / 1000 / (n * (len(bars) - warmup))
    return out


STREAMED = ["ICHIMOKU", "VWAP_SESSION", "SMA", "RSI", "MACD", "BBANDS", "ATR"]


def stream_costs(bars: list[dict[str, float]], warmup: int = 1000) -> dict[str, float]:
    """Mean microseconds per ``update`` after `warmup` bars, for each of `STREAMED` and raw TA-Lib SMA."""
    registry = {i.name: i for i in builtin_indicators()}
    checked = [check_bar(b) for b in bars]
    out: dict[str, float] = {}
    for name in STREAMED:
        indicator = registry[name]
        stream = indicator.stream({p.name: p.default for p in indicator.params})
        for bar in checked[:warmup]:
            stream.update(bar)
        t = time.perf_counter_ns()
        for bar in checked[warmup:]:
            stream.update(bar)
        out[name] = (time.perf_counter_ns() - t) / 1000 / (len(checked) - warmup)
    closes = np.array([b["close"] for b in checked])
    step = talib.stream.SMA(closes[:warmup], timeperiod=30).update
    rest = closes[warmup:].tolist()
    t = time.perf_counter_ns()
    for value in rest:
        step(value)
    out["talib_sma_handle"] = (time.perf_counter_ns() - t) / 1000 / len(rest)
    return out


FORWARDER = """
import sys, msgpack, zmq
ctx = zmq.Context()
sub, pub = ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
for sock in (sub, pub):
    sock.setsockopt(zmq.LINGER, 0); sock.setsockopt(zmq.SNDHWM, 1_000_000); sock.setsockopt(zmq.RCVHWM, 1_000_000)
sub.bind(sys.argv[1]); pub.bind(sys.argv[2]); sub.setsockopt(zmq.SUBSCRIBE, b"")
update = {"symbol": "S", "timeframe": "1m", "ts": 0, "values": {f"K{i}": 1.5 for i in range(26)},
          "warm": {f"K{i}": True for i in range(20)}}
print("ready", flush=True)
while True:
    topic, body = sub.recv_multipart()
    update["ts"] = msgpack.unpackb(body)["ts"]
    pub.send_multipart([b"indicator" + topic[3:], msgpack.packb(update)])
"""


def connect(ctx: zmq.Context[zmq.Socket[bytes]], pub_port: int, sub_port: int, timeout_s: float = 10
            ) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    """A feed socket and an ``indicator.`` subscriber, past the slow-joiner (bounded)."""
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    for sock in (pub, sub):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 1_000_000)
        sock.setsockopt(zmq.RCVHWM, 1_000_000)
    pub.connect(f"tcp://{C.HOST}:{pub_port}")
    sub.connect(f"tcp://{C.HOST}:{sub_port}")
    sub.setsockopt(zmq.SUBSCRIBE, b"indicator.")
    probe = make_bars(1)[0]
    for _ in range(round(timeout_s * 20)):
        pub.send_multipart([b"bar.PROBE.1m", msgpack.packb(probe)])
        if sub.poll(50):
            sub.recv_multipart()
            while sub.poll(200):  # the updates of the probes sent before this one came back
                sub.recv_multipart()
            return pub, sub
    raise SystemExit(f"no update came back from the probe bar within {timeout_s:.0f} s")


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
               symbols: int, burst: int, limit_s: float = 30) -> dict[str, float]:
    topics = [f"bar.S{i:03d}.1m".encode() for i in range(symbols)]
    payloads = [msgpack.packb(b) for b in bars]
    sent = received = 0
    t0 = time.perf_counter()
    deadline = time.monotonic() + limit_s
    for start in range(0, len(payloads), max(1, burst // symbols)):
        for payload in payloads[start:start + max(1, burst // symbols)]:
            for topic in topics:
                pub.send_multipart([topic, payload])
                sent += 1
        while received < sent:
            if not sub.poll(round(limit_s * 1000 / 15)):
                raise SystemExit(f"updates stalled at {received} of {sent}")
            sub.recv_multipart()
            received += 1
        if time.monotonic() > deadline:
            break
    elapsed = time.perf_counter() - t0
    return {"bars": float(received), "seconds": elapsed, "bars_per_s": received / elapsed}


def paired_throughput(ours: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
                      raw: tuple[zmq.Socket[bytes], zmq.Socket[bytes]], bars: list[dict[str, float]], symbols: int,
                      burst: int, rounds: int) -> dict[str, Any]:
    """`throughput` of ours and of the raw forwarder in `rounds` rounds, the two back to back in each round
    (which goes first alternates), each round on the next bars. A round's ratio compares two runs a moment
    apart, so a change of the machine's state between rounds (this VM's rates move by 1.5x from one second
    to the next) moves both; the medians are what is reported."""
    per_round = len(bars) // rounds
    ours_rates, raw_rates = [], []
    for r in range(rounds):
        chunk = bars[r * per_round:(r + 1) * per_round]
        order = [(ours, ours_rates), (raw, raw_rates)]
        for sockets, rates in (order if r % 2 else order[::-1]):
            rates.append(throughput(*sockets, chunk, symbols, burst)["bars_per_s"])
    ratios = [a / b for a, b in zip(ours_rates, raw_rates, strict=True)]
    return {"ours": ours_rates, "raw": raw_rates, "ratios": ratios, "ours_bars_per_s": C.median(ours_rates),
            "raw_bars_per_s": C.median(raw_rates), "ratio": C.median(ratios)}


VALGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file={out}"]


def _callgrind(pid: int, *command: str) -> None:
    subprocess.run(["callgrind_control", *command, str(pid)], check=True, capture_output=True, timeout=120)


def _collected(path: Path) -> int:
    """Instructions a callgrind dump counted (its ``summary:`` line)."""
    return next(int(line.split()[1]) for line in path.read_text().splitlines() if line.startswith("summary:"))


def instructions(args: argparse.Namespace) -> int:
    """Instructions per bar of the service process and of the raw forwarder's, counted by callgrind over the
    same throughput load after a warm-up (every indicator open): a measure the machine's load does not move.
    Each process runs under ``valgrind --tool=callgrind``; its counters are zeroed when the load starts and
    dumped when the last update of the load has come."""
    folder = Path(tempfile.mkdtemp(prefix="bench-live-cg-"))
    wrapper = folder / "serve"
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(VALGRIND).format(out=folder / 'serve.cg')} "
                       f"{C.serve_executable()} \"$@\"\n")
    wrapper.chmod(0o755)
    C.serve_executable = lambda: str(wrapper)  # Service starts the service under callgrind
    bars = make_bars(args.warm + args.measure)
    result: dict[str, int] = {}
    with C.Service(extra_toml=TOML, start_timeout=900) as svc, C.ProcessGroup() as group:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        raw_in, raw_out = C.free_ports(2)
        forwarder = group.start([*(a.format(out=folder / "raw.cg") for a in VALGRIND), C.PYTHON, "-c", FORWARDER,
                                 f"tcp://{C.HOST}:{raw_in}", f"tcp://{C.HOST}:{raw_out}"],
                                stdout=subprocess.PIPE, text=True)
        assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == "ready"
        for name, pid, ports, out in (("ours", svc.pid, (svc.pub_in_port, svc.pub_out_port), folder / "serve.cg"),
                                      ("raw", forwarder.pid, (raw_in, raw_out), folder / "raw.cg")):
            pub, sub = connect(ctx, *ports, timeout_s=300)
            throughput(pub, sub, bars[:args.warm], args.symbols, args.burst, limit_s=600)
            _callgrind(pid, "--zero")  # count from here
            done = throughput(pub, sub, bars[args.warm:], args.symbols, args.burst, limit_s=600)
            _callgrind(pid, "--dump")  # to here: the dump is <out>.1
            result[name] = round(_collected(out.with_name(out.name + ".1")) / done["bars"])
            print(f"{name}: {result[name]:,} instructions per bar over {done['bars']:,.0f} bars", flush=True)
            for sock in (pub, sub):
                sock.close(0)
        ctx.term()
    if args.keep:
        print(f"callgrind files kept in {folder} (callgrind_annotate --threshold=100 {folder}/serve.cg.1)")
    else:
        shutil.rmtree(folder)
    print(f"\nours / raw forwarder: {result['ours'] / result['raw']:.2f}x the instructions per bar")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bars", type=int, default=3000)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7,
                        help="throughput rounds per repeat, ours and the raw forwarder back to back in each")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per bar under callgrind (service and raw forwarder) instead")
    parser.add_argument("--warm", type=int, default=100, help="--instructions: bars per symbol before counting")
    parser.add_argument("--measure", type=int, default=20, help="--instructions: bars per symbol counted")
    parser.add_argument("--keep", action="store_true", help="--instructions: keep the callgrind files to annotate")
    args = parser.parse_args()
    if args.instructions:
        return instructions(args)
    runs = []
    with C.Service(extra_toml=TOML) as svc, C.ProcessGroup() as group:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        raw_in, raw_out = C.free_ports(2)
        forwarder = group.start([C.PYTHON, "-c", FORWARDER, f"tcp://{C.HOST}:{raw_in}", f"tcp://{C.HOST}:{raw_out}"],
                                stdout=subprocess.PIPE, text=True)
        assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == "ready"
        ours, raw = connect(ctx, svc.pub_in_port, svc.pub_out_port), connect(ctx, raw_in, raw_out)
        n_burst = max(20, 20_000 // args.symbols)  # bars per symbol in one throughput run
        for repeat in range(1, args.repeat + 1):
            bars = make_bars(args.bars, seed=repeat)
            for bar in bars:
                bar["ts"] += repeat * 10**9  # newer than every earlier repeat's bars
            run = {"reference": reference(bars), "raw_latency": latency(*raw, bars),
                   "latency": latency(*ours, bars),
                   "throughput": paired_throughput(ours, raw, bars[:n_burst * args.rounds], args.symbols,
                                                   args.burst, args.rounds),
                   "streams": stream_costs(make_bars(20_000, seed=repeat)), "universe": universe_costs()}
            runs.append(run)
            print(f"repeat {repeat}: compute only p50 {run['reference']['p50_us']:.1f} us; bar -> update p50 "
                  f"{run['latency']['p50_us']:.0f} us p99 {run['latency']['p99_us']:.0f} us (raw forwarder "
                  f"{run['raw_latency']['p50_us']:.0f} / {run['raw_latency']['p99_us']:.0f} us); "
                  f"{run['throughput']['ours_bars_per_s']:,.0f} bars/s over {args.symbols} symbols (raw "
                  f"{run['throughput']['raw_bars_per_s']:,.0f}; ratio {run['throughput']['ratio']:.2f}, rounds "
                  f"{' '.join(f'{x:.2f}' for x in run['throughput']['ratios'])})")
        for sock in (*ours, *raw):
            sock.close(0)
        ctx.term()
    med = {key: C.median(r[part][stat] for r in runs) for key, part, stat in (
        ("reference", "reference", "p50_us"), ("latency", "latency", "p50_us"),
        ("raw_latency", "raw_latency", "p50_us"), ("throughput", "throughput", "ours_bars_per_s"),
        ("raw_throughput", "throughput", "raw_bars_per_s"))}
    p99, raw_p99 = (C.median(r[k]["p99_us"] for r in runs) for k in ("latency", "raw_latency"))
    # ratios to the raw forwarder: the median of each repeat's own ratio (both measured back to back)
    latency_ratio = C.median(r["latency"]["p50_us"] / r["raw_latency"]["p50_us"] for r in runs)
    throughput_ratio = C.median(r["throughput"]["ratio"] for r in runs)
    print(f"\n{len(LIVE)} live indicators; medians of {len(runs)} repeats")
    C.print_table(["measure", "raw forwarder", "ours", "ratio"], [
        ("20 indicators updated in-process (compute only), p50", "", f"{med['reference']:.1f} us", ""),
        ("bar published -> indicator update received, p50", f"{med['raw_latency']:.0f} us",
         f"{med['latency']:.0f} us", f"{latency_ratio:.2f}"),
        ("same, p99", f"{raw_p99:.0f} us", f"{p99:.0f} us", f"{p99 / raw_p99:.2f}"),
        (f"throughput over {args.symbols} symbols", f"{med['raw_throughput']:,.0f} bars/s",
         f"{med['throughput']:,.0f} bars/s", f"{throughput_ratio:.2f}")])
    streams = {name: C.median(r["streams"][name] for r in runs) for name in runs[0]["streams"]}
    print("\nper update, in-process (mean after 1,000 warm-up bars)")
    C.print_table(["stream", "us"], [(name, f"{value:.2f}") for name, value in streams.items()])
    universe = {n: C.median(r["universe"][n] for r in runs) for n in runs[0]["universe"]}
    print(f"\nper committed bar, {len(LIVE)} indicators, in-process, symbols' bars round robin (mean)")
    C.print_table(["symbols in the process", "us per bar"], [(n, f"{value:.2f}") for n, value in universe.items()])
    print()
    verdicts = [
        C.verdict("live: bar published -> indicator update received, p50 under 300 us", med["latency"] < 300,
                  f"{med['latency']:.0f} us (raw forwarder {med['raw_latency']:.0f} us)"),
        C.verdict("live: bar -> update p50 within 1.4x of the raw forwarder's", latency_ratio <= 1.4,
                  f"{latency_ratio:.2f}x ({med['latency']:.0f} vs {med['raw_latency']:.0f} us)"),
        C.verdict(f"live: at least 20,000 bars/s across {args.symbols} symbols", med["throughput"] >= 20_000,
                  f"{med['throughput']:,.0f} bars/s (raw forwarder {med['raw_throughput']:,.0f})"),
        C.verdict("live: throughput at least 0.6x the raw forwarder's", throughput_ratio >= 0.6,
                  f"{throughput_ratio:.2f}x ({med['throughput']:,.0f} vs {med['raw_throughput']:,.0f} bars/s)"),
        *(C.verdict(f"live: {name} under 2 us per update", streams[name] < 2, f"{streams[name]:.2f} us")
          for name in ("ICHIMOKU", "VWAP_SESSION")),
    ]
    C.write_results("bench_live", {"params": vars(args), "runs": runs, "verdicts": verdicts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
