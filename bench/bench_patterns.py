#!/usr/bin/env python3
"""Patterns: TA-Lib's 61 candlestick patterns and our chart patterns, in the actor, over REST and live, against
TA-Lib in the same run.

1. In the actor: the 61 candlestick patterns on 10,000 bars as the ``patterns`` service detects them (TA-Lib's
   call per pattern, then the events), against the same 61 TA-Lib calls made directly. Target: within 1.2x.
   Beside it, the chart patterns alone on the same bars (swings, formations, confirmations, events as
   columns), as a ratio to the same TA-Lib reference: with the walks compiled by numba (where installed)
   and with the numpy formulations that stand in without it.
2. ``POST /api/v1/patterns/detect`` on 10,000 bars (JSON, one client), p50 and p99: the chart patterns alone
   (``kind: chart``; target under 10 ms), the candlestick patterns alone, and every pattern (target under
   25 ms). The service loads its compiled chart walks on a thread at the first chart request; the benchmark
   waits (up to 60 s) until its health says ``chart_walks: compiled`` before measuring. Beside them, the
   parts of a request that are not detection, timed in this process on the same bodies: reading the JSON
   body (``codec.decode_json``, columns to arrays, as the edge does) and writing the reply
   (``codec.encode_json``); what REST adds beyond those and the detection is HTTP, the edge and the actor.
3. Live: one bar published on ``bar.SYM.1m`` with every pattern live (61 candlestick, 10 chart) -> the
   ``pattern.SYM.1m`` events of that bar received (bars that confirm at least one pattern), p50. Target: under
   1 ms. Reference: the raw pyzmq forwarder of bench_live.py under the same feed.

With ``--callgrind N`` it measures nothing of the above: it counts the instructions of the serve process over
N ``POST /api/v1/patterns/detect`` requests of each kind (chart, candlestick, all) under valgrind's
callgrind, after its compiled chart walks have loaded (`bench_indicators.callgrind_requests`): a measure the
machine's load does not move.

    python bench/bench_patterns.py [--repeat 3] [--iterations 30]
    python bench/bench_patterns.py --callgrind 10
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import talib
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_indicators as I
import bench_live as L

from ml_processing.bus import codec
from ml_processing.plugins.patterns.actor import detect_grouped
from ml_processing.plugins.patterns.candles import candlesticks
from ml_processing.plugins.patterns.chart import chart_patterns, jit

#: The fields of a ``detect`` body the edge reads as columns (`ml_processing.bus.edge.app.json_columns`).
COLUMNS = frozenset(("open", "high", "low", "close", "volume", "ts"))

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


def service_walks(edge_url: str, chart_request: Callable[[], Any], seconds: float = 60) -> str:
    """Start the service's compiled chart walks loading (a chart request) and wait, up to `seconds`, for its
    health to say which walks it uses."""
    chart_request()
    deadline = time.monotonic() + seconds
    while True:
        with urllib.request.urlopen(edge_url + "/health") as resp:
            status = str(json.load(resp)["technical_analysis"].get("chart_walks", "numpy"))
        if status != "loading" or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def reply(events: dict[str, Any]) -> dict[str, Any]:
    """The ``detect`` reply around `events`, as the actor makes it."""
    counts = {name: len(group["index"]) for name, group in events.items()}
    return {"bars": 10_000, "patterns": len(events), "total": sum(counts.values()), "counts": counts, "events": events}


def numpy_walks(measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """`measure` with the compiled chart walks switched off (the numpy formulations)."""
    jit.ENABLED = False
    try:
        return measure()
    finally:
        jit.ENABLED = True


def count_instructions(count: int, data: dict[str, Any]) -> int:
    """``--callgrind``: instructions per ``detect`` request over REST, chart patterns, candlesticks and all."""
    columns = {k: v.tolist() for k, v in data.items()}
    headers = {"Content-Type": "application/json"}
    cases: dict[str, I.Case] = {
        kind: ("/api/v1/patterns/detect", json.dumps({**columns, "kind": kind} if kind != "all" else columns).encode(),
               headers) for kind in ("chart", "candlestick", "all")}

    def warm(url: str, post: Callable[[I.Case], bytes]) -> None:
        walks = service_walks(url, lambda: post(cases["chart"]), seconds=900)  # numba loads slowly under valgrind
        print(f"chart walks in the service: {walks}", flush=True)

    I.callgrind_requests(cases, count, TOML, warm)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--bars", type=int, default=1500)
    parser.add_argument("--callgrind", type=int, default=0, metavar="N",
                        help="only count the instructions of N REST requests of each kind (valgrind)")
    args = parser.parse_args()
    machine = C.machine_info()
    patterns = candlesticks()
    chosen = [(p, p.resolve({})) for p in patterns]
    chart = [(p, p.resolve({})) for p in chart_patterns()]
    data = {k: v for k, v in I.series(10_000).items() if k != "volume"}
    if args.callgrind:
        return count_instructions(args.callgrind, data)
    ohlc = [data[k] for k in ("open", "high", "low", "close")]
    funcs = [getattr(talib, p.name) for p in patterns]
    columns = {k: v.tolist() for k, v in data.items()}
    bodies = {"rest_chart": json.dumps({**columns, "kind": "chart"}).encode(),
              "rest_candles": json.dumps({**columns, "kind": "candlestick"}).encode(),
              "rest": json.dumps(columns).encode()}
    jit.warm()
    walks = jit.status()
    replies = {"chart": reply(detect_grouped(chart, data, None)), "all": reply(detect_grouped(chosen + chart, data, None))}
    runs = []
    with C.Service(extra_toml=TOML, start_timeout=120) as svc, C.ProcessGroup() as group:
        url = svc.edge_url + "/api/v1/patterns/detect"

        def rest(body: bytes) -> None:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as resp:
                resp.read()

        served = service_walks(svc.edge_url, lambda: rest(bodies["rest_chart"]))

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
                   "read_chart": C.timed(lambda: codec.decode_json(bodies["rest_chart"], COLUMNS), args.iterations),
                   "write_chart": C.timed(lambda: codec.encode_json(replies["chart"]), args.iterations),
                   "write_all": C.timed(lambda: codec.encode_json(replies["all"]), args.iterations),
                   "actor": C.timed(lambda: detect_grouped(chosen, data, None), args.iterations),
                   "chart": C.timed(lambda: detect_grouped(chart, data, None), args.iterations),
                   "chart_numpy": numpy_walks(lambda: C.timed(lambda: detect_grouped(chart, data, None),
                                                              args.iterations)),
                   **{name: C.timed(lambda body=body: rest(body), args.iterations) for name, body in bodies.items()},
                   "raw_live": L.latency(*raw, bars),
                   "live": live_latency(pub, sub, bars, expect)}
            runs.append(run)
            print(f"repeat {repeat}: TA-Lib {run['talib']['p50_us']:.0f} us, actor {run['actor']['p50_us']:.0f} us, "
                  f"chart {run['chart']['p50_us']:.0f} us; REST chart {run['rest_chart']['p50_us'] / 1000:.1f} ms, "
                  f"candlesticks {run['rest_candles']['p50_us'] / 1000:.1f} ms, all {run['rest']['p50_us'] / 1000:.1f} ms; "
                  f"live p50 {run['live']['p50_us']:.0f} us (raw forwarder {run['raw_live']['p50_us']:.0f} us)")
        for sock in (pub, sub, *raw):
            sock.close(0)
        ctx.term()
    med = {k: C.median(r[k]["p50_us"] for r in runs) for k in runs[0]}
    p99 = {k: C.median(r[k]["p99_us"] for r in runs) for k in runs[0]}
    talib_ms = med["talib"] / 1000
    rest_chart = med["rest_chart"] - med["read_chart"] - med["chart"] - med["write_chart"]
    print(f"\n61 candlestick and {len(chart)} chart patterns on 10,000 bars; medians of {len(runs)} repeats; "
          f"reference: the 61 TA-Lib calls direct, {talib_ms:.2f} ms; chart walks {walks} here, {served} in the "
          "service")
    C.print_table(["measure", "p50", "p99", "p50 / TA-Lib direct"], [
        ("61 candlestick patterns in the actor", f"{med['actor'] / 1000:.2f} ms", f"{p99['actor'] / 1000:.2f} ms",
         f"{med['actor'] / med['talib']:.2f}"),
        (f"{len(chart)} chart patterns in the actor ({walks})", f"{med['chart'] / 1000:.2f} ms",
         f"{p99['chart'] / 1000:.2f} ms", f"{med['chart'] / med['talib']:.2f}"),
        (f"{len(chart)} chart patterns in the actor (numpy walks)", f"{med['chart_numpy'] / 1000:.2f} ms",
         f"{p99['chart_numpy'] / 1000:.2f} ms", f"{med['chart_numpy'] / med['talib']:.2f}"),
        ("REST detect, chart patterns", f"{med['rest_chart'] / 1000:.1f} ms", f"{p99['rest_chart'] / 1000:.1f} ms",
         f"{med['rest_chart'] / med['talib']:.2f}"),
        ("REST detect, candlestick patterns", f"{med['rest_candles'] / 1000:.1f} ms",
         f"{p99['rest_candles'] / 1000:.1f} ms", f"{med['rest_candles'] / med['talib']:.2f}"),
        ("REST detect, all patterns", f"{med['rest'] / 1000:.1f} ms", f"{p99['rest'] / 1000:.1f} ms",
         f"{med['rest'] / med['talib']:.2f}"),
        ("  REST chart: reading the JSON body (in this process)", f"{med['read_chart'] / 1000:.2f} ms",
         f"{p99['read_chart'] / 1000:.2f} ms", ""),
        ("  REST chart: writing the JSON reply (in this process)", f"{med['write_chart'] / 1000:.2f} ms",
         f"{p99['write_chart'] / 1000:.2f} ms", ""),
        ("  REST chart: HTTP, edge and actor (the rest)", f"{rest_chart / 1000:.2f} ms", "", ""),
        ("  REST all: writing the JSON reply (in this process)", f"{med['write_all'] / 1000:.2f} ms",
         f"{p99['write_all'] / 1000:.2f} ms", ""),
        ("live: bar -> pattern events", f"{med['live']:.0f} us", f"{p99['live']:.0f} us",
         f"raw forwarder {med['raw_live']:.0f} us: {med['live'] / med['raw_live']:.2f}x")])
    print()
    verdicts = [
        C.verdict("patterns: 61 candlestick patterns on 10,000 bars in the actor within 1.2x of TA-Lib",
                  med["actor"] / med["talib"] <= 1.2, f"{med['actor'] / med['talib']:.2f}x"),
        C.verdict("patterns: POST /api/v1/patterns/detect, chart patterns, 10,000 bars, p50 < 10 ms",
                  med["rest_chart"] < 10_000, f"{med['rest_chart'] / 1000:.1f} ms ({len(chart)} chart patterns; "
                  f"in the actor {med['chart'] / 1000:.2f} ms, {med['chart'] / med['talib']:.2f}x TA-Lib's 61 calls)"),
        C.verdict("patterns: POST /api/v1/patterns/detect, all patterns, 10,000 bars, p50 < 25 ms",
                  med["rest"] < 25_000, f"{med['rest'] / 1000:.1f} ms (61 candlestick and {len(chart)} chart patterns)"),
        C.verdict("patterns: live bar -> events p50 < 1 ms", med["live"] < 1000, f"{med['live']:.0f} us"),
    ]
    C.write_results("bench_patterns", {"params": vars(args), "chart_walks": {"in_process": walks, "service": served},
                                       "runs": runs, "verdicts": verdicts}, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
