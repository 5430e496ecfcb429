#!/usr/bin/env python3
"""Scaling over processes on one host: ``serve --processes 2`` against ``--processes 1``, in one run.

Ours: ``ml-processing serve`` (generated plugins.toml, prediction cache off), once with ``MLP_KERNEL_PROCESSES=1``
and once with ``2``; the second is measured only once /health shows its worker process running.

1. Server-bound loads, each from 2 client processes, each a blocking ``mdp.Client`` loop started together on
   a time barrier, bounded in count and time: (a) ``indicators.compute`` of 10 indicators over 10,000 bars
   (TA-Lib holds the GIL: one process uses one core); (b) ``models.predict_batch`` of 1,000 rows of the
   default xgboost model (xgboost releases the GIL, so one process already spreads it over its threads).
   Reported: requests/s of both clients together. Target: 2 processes >= 1.6x of 1 (on load a).
2. One-row ``models.predict`` from one client process, p50/p99 over ZeroMQ. Target: 2 processes' p50 <= 1.1x
   of 1 process's (a cheap request is answered in the serve process, with no extra hop).
3. Live bars over 100 symbols with bench_live's 20 live indicators (and nothing else on each bar), fed in
   bursts by bench_live's feed, every indicator update read back: bars/s. With 2 processes the symbols are
   sharded over both (docs/SCALING.md). Target: 2 processes >= 1.5x of 1.

The reference of each ratio is the one-process service, measured in the same repeat. Every client runs in
its own process, every loop is bounded, everything is on 127.0.0.1. Medians of the repeats are quoted; every
repeat is kept in bench/results/bench_scaling.json.

    python bench/bench_scaling.py              # 3 repeats
    python bench/bench_scaling.py --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_live

ROWS = 1_000
FEATURES = 4  # the default models' inputs
MODEL = "xgboost_default"
BARS = 10_000
INDICATORS: list[Any] = ["SMA", "EMA", "RSI", {"name": "BBANDS", "params": {"timeperiod": 20}}, "MACD", "ATR",
                         "ADX", "STOCH", "OBV", "CCI"]


def _bars(n: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(1e3, 1e5, n)}


def _rows(n: int, seed: int) -> list[list[float]]:
    import random

    rnd = random.Random(seed)
    return [[rnd.uniform(-1, 1) for _ in range(FEATURES)] for _ in range(n)]


def _client(argv: list[str]) -> int:
    """``_client batch|one ENDPOINT START_AT SECONDS COUNT``: one client process; prints its result as JSON."""
    from ml_processing.bus import mdp

    kind, endpoint, start_at, seconds, count = argv[0], argv[1], float(argv[2]), float(argv[3]), int(argv[4])
    client = mdp.Client(endpoint, timeout=30)
    try:
        service = "models"
        if kind == "batch":
            args: dict[str, Any] = {"model": MODEL, "rows": _rows(ROWS, 1)}
            op = "predict_batch"
        elif kind == "indicators":
            service, op, args = "indicators", "compute", {**_bars(BARS), "indicators": INDICATORS}
        else:
            args = {"model": MODEL, "features": _rows(1, 2)[0]}
            op = "predict"
        for _ in range(5):  # warm-up
            client.request(service, op, args)
        C.wait_until(start_at)
        samples: list[int] = []
        began = time.perf_counter()
        deadline = began + seconds
        for _ in range(count):
            t0 = time.perf_counter_ns()
            client.request(service, op, args)
            samples.append(time.perf_counter_ns() - t0)
            if time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - began
    finally:
        client.close()
    print(json.dumps({"done": len(samples), "elapsed_s": elapsed, **C.summarize_ns(samples)}))
    return 0


def _clients(group: C.ProcessGroup, kind: str, endpoint: str, n: int, seconds: float, count: int
             ) -> list[dict[str, Any]]:
    start_at = time.time() + 3.0
    procs = [group.start([sys.executable, __file__, "_client", kind, endpoint, str(start_at), str(seconds),
                          str(count)], stdout=C.subprocess.PIPE, stderr=C.subprocess.PIPE, text=True)
             for _ in range(n)]
    return C.collect(procs, seconds + 60, group)


def _wait_processes(svc: C.Service, count: int, timeout: float = 120.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(svc.edge_url + "/health", timeout=5) as resp:
            health = json.loads(resp.read())
        running = [p for p in health.get("processes", []) if p["state"] == "running"]
        services = json.loads(urllib.request.urlopen(svc.edge_url + "/api/v1/services", timeout=5).read())
        if len(running) == count and (count == 1 or services.get("models", {}).get("workers", 0) >= count - 1):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} processes did not all run within {timeout}s")


def _wait_members(svc: C.Service, count: int, timeout: float = 120.0) -> None:
    """Until `count` processes share the live symbols (their move done)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(svc.edge_url + "/health", timeout=5) as resp:
            shards = json.loads(resp.read())["shards"]
        if len(shards["members"]) == count and not shards["frozen"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} processes did not share the live symbols within {timeout}s")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids(svc: C.Service) -> list[int]:
    import urllib.request

    with urllib.request.urlopen(svc.edge_url + "/health", timeout=5) as resp:
        return [int(p["pid"]) for p in json.loads(resp.read())["processes"]]


def live(processes: int, bars: int, symbols: int = 100, burst: int = 200) -> dict[str, Any]:
    """Live bars/s over `symbols` symbols with `processes` processes (bench_live's feed and indicators), and
    each service process's CPU time per 1,000 bars over the measured load: the capacity a host with a core
    per process would have."""
    import zmq

    env = {"MLP_KERNEL_PROCESSES": str(processes)}
    with C.Service(env=env, start_timeout=120, extra_toml=bench_live.TOML) as svc:
        _wait_processes(svc, processes)
        _wait_members(svc, processes)
        pids = _pids(svc)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        try:
            pub, sub = bench_live.connect(ctx, svc.pub_in_port, svc.pub_out_port)
            series = bench_live.make_bars(bars)
            bench_live.throughput(pub, sub, series[:100], symbols, burst)  # warm-up: every series exists
            before = [_cpu_seconds(pid) for pid in pids]
            result = bench_live.throughput(pub, sub, series[100:], symbols, burst)
            spent = [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        finally:
            ctx.destroy(linger=0)
    per_k = [1000 * s / result["bars"] for s in spent]
    return {"bars_per_s": float(result["bars_per_s"]), "cpu_ms_per_1000_bars": [round(1000 * c, 2) for c in per_k],
            "capacity_bars_per_s": 1 / max(per_k) * 1000 if max(per_k) > 0 else 0.0}


def measure(processes: int, seconds: float) -> dict[str, Any]:
    env = {"MLP_KERNEL_PROCESSES": str(processes), "MLP_CACHE_PREDICTION_CACHE_TTL": "0"}
    with C.Service(env=env, start_timeout=120) as svc, C.ProcessGroup() as group:
        _wait_processes(svc, processes)
        indicators = _clients(group, "indicators", svc.broker, 2, seconds, 100_000)
        batch = _clients(group, "batch", svc.broker, 2, seconds, 100_000)
        one = _clients(group, "one", svc.broker, 1, seconds, 5_000)[0]

    def rate(results: list[dict[str, Any]]) -> float:
        return sum(r["done"] for r in results) / max(r["elapsed_s"] for r in results)

    return {"processes": processes, "indicators_per_s": rate(indicators), "batch_per_s": rate(batch),
            "batch_p50_us": C.median(r["p50_us"] for r in batch),
            "one_p50_us": one["p50_us"], "one_p99_us": one["p99_us"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each load (default 8)")
    parser.add_argument("--bars", type=int, default=1100, help="bars per symbol of the live load (default 1100)")
    args = parser.parse_args()
    repeats = []
    for i in range(args.repeat):
        one, two = measure(1, args.seconds), measure(2, args.seconds)
        one_live, two_live = live(1, args.bars), live(2, args.bars)
        one["live_bars_per_s"], two["live_bars_per_s"] = one_live["bars_per_s"], two_live["bars_per_s"]
        one["live_cpu_ms_per_1000_bars"], two["live_cpu_ms_per_1000_bars"] = (
            one_live["cpu_ms_per_1000_bars"], two_live["cpu_ms_per_1000_bars"])
        one["live_capacity"], two["live_capacity"] = one_live["capacity_bars_per_s"], two_live["capacity_bars_per_s"]
        repeats.append({"one": one, "two": two, "batch_ratio": two["batch_per_s"] / one["batch_per_s"],
                        "indicators_ratio": two["indicators_per_s"] / one["indicators_per_s"],
                        "p50_ratio": two["one_p50_us"] / one["one_p50_us"],
                        "live_ratio": two["live_bars_per_s"] / one["live_bars_per_s"]})
        print(f"repeat {i + 1}: indicators/s {one['indicators_per_s']:.1f} -> {two['indicators_per_s']:.1f} "
              f"({repeats[-1]['indicators_ratio']:.2f}x); "
              f"batches/s {one['batch_per_s']:.1f} -> {two['batch_per_s']:.1f} "
              f"({repeats[-1]['batch_ratio']:.2f}x); one-row p50 {one['one_p50_us']:.0f} -> "
              f"{two['one_p50_us']:.0f} us ({repeats[-1]['p50_ratio']:.2f}x); live bars/s "
              f"{one['live_bars_per_s']:.0f} -> {two['live_bars_per_s']:.0f} ({repeats[-1]['live_ratio']:.2f}x); "
              f"live CPU ms per 1,000 bars by process {one['live_cpu_ms_per_1000_bars']} -> "
              f"{two['live_cpu_ms_per_1000_bars']}, capacity with a core each {one['live_capacity']:.0f} -> "
              f"{two['live_capacity']:.0f} bars/s", flush=True)
    batch_ratio = C.median(r["batch_ratio"] for r in repeats)
    indicators_ratio = C.median(r["indicators_ratio"] for r in repeats)
    p50_ratio = C.median(r["p50_ratio"] for r in repeats)
    live_ratio = C.median(r["live_ratio"] for r in repeats)
    C.print_table(["measure", "1 process", "2 processes", "ratio"], [
        ["10 indicators x 10k bars/s (2 clients)", C.fmt(C.median(r["one"]["indicators_per_s"] for r in repeats)),
         C.fmt(C.median(r["two"]["indicators_per_s"] for r in repeats)), f"{indicators_ratio:.2f}x"],
        ["batches of 1,000 rows/s (2 clients)", C.fmt(C.median(r["one"]["batch_per_s"] for r in repeats)),
         C.fmt(C.median(r["two"]["batch_per_s"] for r in repeats)), f"{batch_ratio:.2f}x"],
        ["one-row predict p50 (us)", C.fmt(C.median(r["one"]["one_p50_us"] for r in repeats)),
         C.fmt(C.median(r["two"]["one_p50_us"] for r in repeats)), f"{p50_ratio:.2f}x"],
        ["live bars/s, 100 symbols x 20 indicators", C.fmt(C.median(r["one"]["live_bars_per_s"] for r in repeats)),
         C.fmt(C.median(r["two"]["live_bars_per_s"] for r in repeats)), f"{live_ratio:.2f}x"],
        ["  live capacity with a core per process (CPU time per bar)",
         C.fmt(C.median(r["one"]["live_capacity"] for r in repeats)),
         C.fmt(C.median(r["two"]["live_capacity"] for r in repeats)),
         f"{C.median(r['two']['live_capacity'] / r['one']['live_capacity'] for r in repeats):.2f}x"],
    ])
    verdicts = [C.verdict("server-bound load (indicators), 2 processes >= 1.6x of 1", indicators_ratio >= 1.6,
                          f"{indicators_ratio:.2f}x"),
                C.verdict("batch predictions (xgboost threads already use both cores), 2 processes vs 1", None,
                          f"{batch_ratio:.2f}x"),
                C.verdict("one-row predict p50, 2 processes <= 1.1x of 1", p50_ratio <= 1.1, f"{p50_ratio:.2f}x"),
                C.verdict("live bars over 100 symbols, 2 processes >= 1.5x of 1", live_ratio >= 1.5,
                          f"{live_ratio:.2f}x")]
    C.write_results("bench_scaling", {"repeats": repeats, "verdicts": verdicts})
    return 0 if all(v["pass"] for v in verdicts) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        sys.exit(_client(sys.argv[2:]))
    sys.exit(main())
