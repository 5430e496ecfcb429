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

Beside each rate, what the work cost in CPU time (from /proc: every thread of each service process, and the
load generator's own), and the rates those costs allow: with a core per service process, with a core per
thread (ZeroMQ's I/O thread and the pub/sub proxy thread run beside the event loop), and on this machine's
cores shared with the load generator, the bound any ratio measured here is under.

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
import resource
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
        cpu = time.process_time()
        began = time.perf_counter()
        deadline = began + seconds
        for _ in range(count):
            t0 = time.perf_counter_ns()
            client.request(service, op, args)
            samples.append(time.perf_counter_ns() - t0)
            if time.perf_counter() > deadline:
                break
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu
    finally:
        client.close()
    print(json.dumps({"done": len(samples), "elapsed_s": elapsed, "cpu_s": cpu, **C.summarize_ns(samples)}))
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
        if len(shards["members"]) == count and not shards["moving"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} processes did not share the live symbols within {timeout}s")


def _cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time so far of a process (every thread), or of one of its threads (/proc stat)."""
    path = Path(f"/proc/{pid}/stat") if tid is None else Path(f"/proc/{pid}/task/{tid}/stat")
    fields = path.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(pids: list[int]) -> dict[tuple[int, int], float]:
    """CPU time so far of every thread of `pids`, by (pid, tid)."""
    out = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out[(pid, int(task.name))] = _cpu_seconds(pid, int(task.name))
            except OSError:  # a thread that ended meanwhile
                continue
    return out


def _own_cpu() -> float:
    """This process's CPU time so far, every thread (the live feed and reader run here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pids(svc: C.Service) -> list[int]:
    import urllib.request

    with urllib.request.urlopen(svc.edge_url + "/health", timeout=5) as resp:
        return [int(p["pid"]) for p in json.loads(resp.read())["processes"]]


def live(processes: int, bars: int, symbols: int = 100, burst: int = 200) -> dict[str, Any]:
    """Live bars/s over `symbols` symbols with `processes` processes (bench_live's feed and indicators), and
    what 1,000 bars cost in CPU time (`_costs`)."""
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
            before, threads, load = [_cpu_seconds(pid) for pid in pids], _threads(pids), _own_cpu()
            result = bench_live.throughput(pub, sub, series[100:], symbols, burst)
            spent = [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
            load = _own_cpu() - load
            by_thread = {k: v - threads.get(k, 0.0) for k, v in _threads(pids).items()}
        finally:
            ctx.destroy(linger=0)
    return {"bars_per_s": float(result["bars_per_s"]), **_costs(spent, by_thread, load, result["bars"], 1000)}


def _costs(spent: list[float], by_thread: dict[tuple[int, int], float], load: float, done: float, per: int
           ) -> dict[str, Any]:
    """What `done` units of work cost in CPU time, per `per` units: each service process (``cpu_ms``), its
    busiest thread (``main_ms``), the load generator (``load_ms``); and the rates they allow: with a core per
    process (``capacity``), with a core per thread (``thread_capacity``), and on this machine's cores with
    the load generator on them too (``machine_bound``)."""
    ms = [1000 * s * per / done for s in spent]
    busiest = 1000 * max(by_thread.values()) * per / done
    load_ms = 1000 * load * per / done
    return {"cpu_ms": [round(m, 2) for m in ms], "busiest_thread_ms": round(busiest, 2), "load_ms": round(load_ms, 2),
            "capacity": per * 1000 / max(ms), "thread_capacity": per * 1000 / busiest,
            "machine_bound": (os.cpu_count() or 1) * per * 1000 / (sum(ms) + load_ms)}


def measure(processes: int, seconds: float) -> dict[str, Any]:
    env = {"MLP_KERNEL_PROCESSES": str(processes), "MLP_CACHE_PREDICTION_CACHE_TTL": "0"}
    with C.Service(env=env, start_timeout=120) as svc, C.ProcessGroup() as group:
        _wait_processes(svc, processes)
        pids = _pids(svc)
        before, threads = [_cpu_seconds(pid) for pid in pids], _threads(pids)
        indicators = _clients(group, "indicators", svc.broker, 2, seconds, 100_000)
        spent = [_cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        by_thread = {k: v - threads.get(k, 0.0) for k, v in _threads(pids).items()}
        batch = _clients(group, "batch", svc.broker, 2, seconds, 100_000)
        one = _clients(group, "one", svc.broker, 1, seconds, 5_000)[0]

    def rate(results: list[dict[str, Any]]) -> float:
        return sum(r["done"] for r in results) / max(r["elapsed_s"] for r in results)

    # the service's CPU time over the whole load (start-up of the clients included: an upper bound), the
    # clients' over their measured loops
    costs = _costs(spent, by_thread, sum(r["cpu_s"] for r in indicators), sum(r["done"] for r in indicators), 1)
    return {"processes": processes, "indicators_per_s": rate(indicators), "indicators_costs": costs,
            "batch_per_s": rate(batch),
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
        one["live_costs"], two["live_costs"] = one_live, two_live
        repeats.append({"one": one, "two": two, "batch_ratio": two["batch_per_s"] / one["batch_per_s"],
                        "indicators_ratio": two["indicators_per_s"] / one["indicators_per_s"],
                        "p50_ratio": two["one_p50_us"] / one["one_p50_us"],
                        "live_ratio": two["live_bars_per_s"] / one["live_bars_per_s"]})
        ind1, ind2 = one["indicators_costs"], two["indicators_costs"]
        print(f"repeat {i + 1}: indicators/s {one['indicators_per_s']:.1f} -> {two['indicators_per_s']:.1f} "
              f"({repeats[-1]['indicators_ratio']:.2f}x), CPU ms per request by process {ind1['cpu_ms']} -> "
              f"{ind2['cpu_ms']}, clients {ind1['load_ms']} -> {ind2['load_ms']}, bound on this machine "
              f"{ind1['machine_bound']:.0f} -> {ind2['machine_bound']:.0f}/s; "
              f"batches/s {one['batch_per_s']:.1f} -> {two['batch_per_s']:.1f} "
              f"({repeats[-1]['batch_ratio']:.2f}x); one-row p50 {one['one_p50_us']:.0f} -> "
              f"{two['one_p50_us']:.0f} us ({repeats[-1]['p50_ratio']:.2f}x); live bars/s "
              f"{one['live_bars_per_s']:.0f} -> {two['live_bars_per_s']:.0f} ({repeats[-1]['live_ratio']:.2f}x), "
              f"CPU ms per 1,000 bars by process {one_live['cpu_ms']} -> {two_live['cpu_ms']}, busiest thread "
              f"{one_live['busiest_thread_ms']} -> {two_live['busiest_thread_ms']}, feed and reader "
              f"{one_live['load_ms']} -> {two_live['load_ms']}; bars/s with a core per process "
              f"{one_live['capacity']:.0f} -> {two_live['capacity']:.0f}, per thread "
              f"{one_live['thread_capacity']:.0f} -> {two_live['thread_capacity']:.0f}, bound on this machine "
              f"{one_live['machine_bound']:.0f} -> {two_live['machine_bound']:.0f}", flush=True)
    batch_ratio = C.median(r["batch_ratio"] for r in repeats)
    indicators_ratio = C.median(r["indicators_ratio"] for r in repeats)
    p50_ratio = C.median(r["p50_ratio"] for r in repeats)
    live_ratio = C.median(r["live_ratio"] for r in repeats)
    rows = [
        ["10 indicators x 10k bars/s (2 clients)", C.fmt(C.median(r["one"]["indicators_per_s"] for r in repeats)),
         C.fmt(C.median(r["two"]["indicators_per_s"] for r in repeats)), f"{indicators_ratio:.2f}x"],
        ["batches of 1,000 rows/s (2 clients)", C.fmt(C.median(r["one"]["batch_per_s"] for r in repeats)),
         C.fmt(C.median(r["two"]["batch_per_s"] for r in repeats)), f"{batch_ratio:.2f}x"],
        ["one-row predict p50 (us)", C.fmt(C.median(r["one"]["one_p50_us"] for r in repeats)),
         C.fmt(C.median(r["two"]["one_p50_us"] for r in repeats)), f"{p50_ratio:.2f}x"],
        ["live bars/s, 100 symbols x 20 indicators", C.fmt(C.median(r["one"]["live_bars_per_s"] for r in repeats)),
         C.fmt(C.median(r["two"]["live_bars_per_s"] for r in repeats)), f"{live_ratio:.2f}x"],
    ]
    for label, key in (("with a core per process", "capacity"), ("with a core per thread", "thread_capacity"),
                       (f"bound on this machine's {os.cpu_count()} cores, load generator included", "machine_bound")):
        for load, costs, unit in (("indicators", "indicators_costs", "/s"), ("live", "live_costs", " bars/s")):
            rows.append([f"  {load}: {label} (from CPU times)",
                         C.fmt(C.median(r["one"][costs][key] for r in repeats)) + unit,
                         C.fmt(C.median(r["two"][costs][key] for r in repeats)) + unit,
                         f"{C.median(r['two'][costs][key] / r['one'][costs][key] for r in repeats):.2f}x"])
    C.print_table(["measure", "1 process", "2 processes", "ratio"], rows)
    verdicts = [C.verdict("server-bound load (indicators), 2 processes >= 1.6x of 1", indicators_ratio >= 1.6,
                          f"{indicators_ratio:.2f}x"),
                C.verdict("batch predictions (xgboost threads already use both cores), 2 processes vs 1", None,
                          f"{batch_ratio:.2f}x"),
                C.verdict("one-row predict p50, 2 processes <= 1.1x of 1", p50_ratio <= 1.1, f"{p50_ratio:.2f}x"),
                C.verdict("live bars over 100 symbols, 2 processes >= 1.5x of 1", live_ratio >= 1.5,
                          f"{live_ratio:.2f}x")]
    C.write_results("bench_scaling", {"repeats": repeats, "verdicts": verdicts})
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_client":
        sys.exit(_client(sys.argv[2:]))
    sys.exit(main())
