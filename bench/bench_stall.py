#!/usr/bin/env python3
"""Event-loop stalls: REST ping latency while a large ingest and a large batch prediction run.

Issue 11 point 4: work on large inputs runs off the event loop or in bounded slices, so REST stays
responsive. Target: ``GET /api/v1/ping`` p99 < 20 ms during a 1,000,000-bar ``indicators.ingest`` and a
100,000-row ``models.predict_batch``.

Ours: ``ml-processing serve`` (generated plugins.toml, default models off, MDP request timeout raised so the
long ops are not cut off) with an xgboost classifier (bench_models' model: 200 trees, depth 6, 16 features)
registered over REST. Then, each in its own process:

- a pinger: ``GET /api/v1/ping`` on one keep-alive connection (``http.client``) every ``--interval-ms``
  (2 ms), recording the wall-clock time and latency of every request, until told to stop (bounded by
  ``--max-seconds``);
- the load: one blocking ``mdp.Client`` sending one ``indicators.ingest`` of ``--bars`` one-minute bars as
  ndarray columns (``--as-maps``: a list of ``{ts, open, high, low, close, volume}`` maps; built before the
  timed request), then one
  ``models.predict_batch`` of ``--rows`` rows (a 2-D float64 ndarray over msgpack).

Reported: ping p50/p99/max in each phase: baseline (``--baseline-seconds`` before the load starts: the
reference of the same run), during the ingest, during the batch prediction; how long each op took; and the
event loop's largest lag. The serve process exposes no loop-lag figure, so the lag is *estimated* from outside
as the largest ping during a load phase minus the baseline ping p50 (a ping that waited behind a busy loop
waited at least that long; it cannot see a stall that fell between two pings, 2 ms apart).

    python bench/bench_stall.py             # 1,000,000 bars, 100,000 rows, 3 repeats
    python bench/bench_stall.py --quick     # 20,000 bars, 5,000 rows, 1 repeat: checks the script works
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_models as M

TARGET_PING_P99_MS = 20.0  # REST ping p99 during each load phase
#: Prediction cache off (every request computed), no default models (nothing trained at the first start).
EXTRA_TOML = """
[cache]
prediction_cache_ttl = 0.0

[plugins.models]
defaults = false
"""
SYMBOL, TIMEFRAME, BAR_MS = "STALL", "1m", 60_000
PHASES = ("baseline", "ingest", "predict_batch")

# -- roles run in child processes ---------------------------------------------------------------------


def role_pinger(url: str, interval_ms: float, stop_file: str, max_seconds: float) -> int:
    """GET `url` on one keep-alive connection every `interval_ms` until `stop_file` exists (bounded)."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    stop = Path(stop_file)
    interval = interval_ms / 1000.0
    times: list[float] = []
    samples: list[int] = []
    errors = 0
    perf, now, wall = time.perf_counter_ns, time.monotonic, time.time
    end = now() + max_seconds
    i = 0
    try:
        while now() < end:
            if (i & 15) == 0 and stop.exists():
                break
            i += 1
            started = now()
            t = wall()
            s = perf()
            conn.request("GET", parts.path)
            resp = conn.getresponse()
            resp.read()
            samples.append(perf() - s)
            times.append(t)
            if resp.status != 200:
                errors += 1
            pause = interval - (now() - started)
            if pause > 0:
                time.sleep(pause)
    finally:
        conn.close()
    print(json.dumps({"count": len(samples), "errors": errors, "times": times, "samples_ns": samples}))
    return 0


def make_bars(n: int) -> list[dict[str, Any]]:
    """`n` consistent one-minute bars of a seeded random walk, as maps (what clients send to ingest)."""
    import numpy as np

    rng = np.random.default_rng(5)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    spread = np.abs(rng.normal(0, 5e-4, n)) * close
    high, low = np.maximum(open_, close) + spread, np.minimum(open_, close) - spread
    volume = rng.integers(1, 1000, n).astype(float)
    ts0 = 1_700_000_000_000 - n * BAR_MS
    return [{"ts": ts0 + i * BAR_MS, "open": o, "high": h, "low": lo, "close": c, "volume": v}
            for i, (o, h, lo, c, v) in enumerate(zip(open_.round(4).tolist(), high.round(4).tolist(),
                                                     low.round(4).tolist(), close.round(4).tolist(),
                                                     volume.tolist(), strict=True))]


def as_columns(bar_list: list[dict[str, Any]]) -> dict[str, Any]:
    """The same bars as ndarray columns (the codec's extension type: decoded without a per-bar object)."""
    import numpy as np

    out: dict[str, Any] = {"ts": np.array([b["ts"] for b in bar_list], dtype=np.int64)}
    for name in ("open", "high", "low", "close", "volume"):
        out[name] = np.array([b[name] for b in bar_list], dtype=np.float64)
    return out


def role_load(broker: str, bars: int, rows: int, timeout: float, columns: bool) -> int:
    """One ingest of `bars` bars, then one batch prediction of `rows` rows; when each ran and what came back."""
    import numpy as np

    from ml_processing.bus import mdp

    bar_list = make_bars(bars)
    sent: dict[str, Any] = as_columns(bar_list) if columns else {"bars": bar_list}
    matrix = np.random.default_rng(17).normal(size=(rows, M.N_FEATURES))
    out: dict[str, Any] = {}
    with mdp.Client(broker, timeout=timeout) as client:
        t0 = time.time()
        reply = client.request("indicators", "ingest", {"symbol": SYMBOL, "timeframe": TIMEFRAME, **sent},
                               timeout=timeout)
        out["ingest"] = {"t0": t0, "t1": time.time(), "reply": reply}
        del bar_list
        t0 = time.time()
        reply = client.request("models", "predict_batch", {"model": M.MODEL_ID, "rows": matrix}, timeout=timeout)
        out["predict_batch"] = {"t0": t0, "t1": time.time(),
                                "reply": {k: v for k, v in reply.items() if k not in ("predictions", "probabilities")}
                                if isinstance(reply, dict) else reply}
    print(json.dumps(out, default=str))
    return 0


# -- the orchestrating side ---------------------------------------------------------------------------


def phase_stats(times: list[float], samples: list[int], t0: float, t1: float) -> dict[str, Any]:
    """The pings that overlapped [t0, t1] (wall clock): one that was waiting when the phase began counts."""
    inside = [s for t, s in zip(times, samples, strict=True) if t <= t1 and t + s / 1e9 >= t0]
    return {"t0": t0, "t1": t1, "seconds": t1 - t0, **C.summarize_ns(inside)}


def one_repeat(svc: C.Service, work: Path, args: argparse.Namespace, k: int) -> dict[str, Any]:
    stop_file = work / f"stop-{k}"
    pinger_bound = args.baseline_seconds + 2 * args.op_timeout + 60
    with C.ProcessGroup() as group:
        pinger = group.start([C.PYTHON, __file__, "_pinger", "--url", svc.edge_url + "/api/v1/ping",
                              "--interval-ms", str(args.interval_ms), "--stop-file", str(stop_file),
                              "--max-seconds", str(pinger_bound)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # the pinger's interpreter starting: not part of the baseline
        base_t0 = time.time()
        time.sleep(args.baseline_seconds)
        base_t1 = time.time()
        try:
            load = C.run_json([C.PYTHON, __file__, "_load", "--broker", svc.broker, "--bars", str(args.bars),
                               "--rows", str(args.rows), "--timeout", str(args.op_timeout),
                               *(["--as-maps"] if args.as_maps else [])],
                              timeout=2 * args.op_timeout + 120)
        finally:
            stop_file.touch()
        pings = C.collect([pinger], 60, group)[0]
    if svc.proc is not None and svc.proc.poll() is not None:
        raise RuntimeError(f"serve exited during the load; log:\n{svc.log_tail()}")
    times, samples = pings["times"], pings["samples_ns"]
    run: dict[str, Any] = {"repeat": k, "pings": pings["count"], "ping_errors": pings["errors"],
                           "baseline": phase_stats(times, samples, base_t0, base_t1)}
    for phase in PHASES[1:]:
        run[phase] = phase_stats(times, samples, load[phase]["t0"], load[phase]["t1"])
        run[phase]["reply"] = load[phase]["reply"]
        # the estimate of the loop's largest lag during the phase: its slowest ping beyond a normal one
        run[phase]["lag_estimate_ms"] = (run[phase].get("max_us", float("nan"))
                                         - run["baseline"].get("p50_us", float("nan"))) / 1000
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the table quotes medians (default 3)")
    parser.add_argument("--bars", type=int, default=1_000_000, help="bars in the one ingest (default 1000000)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the one batch prediction (default 100000)")
    parser.add_argument("--interval-ms", type=float, default=2.0, help="pause between pings (default 2)")
    parser.add_argument("--baseline-seconds", type=float, default=5.0, help="pings before the load (default 5)")
    parser.add_argument("--op-timeout", type=float, default=600.0, help="bound of each load op, s (default 600)")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds for serve to answer /health")
    parser.add_argument("--quick", action="store_true", help="20,000 bars, 5,000 rows, 1 repeat, 2 s baseline")
    parser.add_argument("--as-maps", action="store_true",
                        help="send the ingest as a list of bar maps instead of ndarray columns")
    args = parser.parse_args()
    if args.quick:
        args.bars, args.rows, args.repeat, args.baseline_seconds = 20_000, 5_000, 1, 2.0
    if args.repeat < 1 or args.bars < 1 or args.rows < 1:
        parser.error("--repeat, --bars and --rows must be positive")
    C.exit_on_sigterm()
    machine = C.machine_info()
    extra: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    # the broker must wait for the long ops as long as the client does
    env = {"MLP_BUS_REQUEST_TIMEOUT_MS": str(int(args.op_timeout * 1000))}
    with tempfile.TemporaryDirectory(prefix="mlp-bench-stall-") as tmp:
        work = Path(tmp)
        model_path = work / f"{M.MODEL_ID}.ubj"
        extra["model"] = M.train_model(model_path)
        with C.Service(start_timeout=args.start_timeout, extra_toml=EXTRA_TOML, env=env) as svc:
            extra["service"] = {"pid": svc.pid, "edge": svc.edge_url, "broker": svc.broker,
                                "uvloop": C.uses_uvloop(svc.pid), "register": M.register(svc, model_path)}
            M.wait_model(svc, M.MODEL_ID, 60)
            print(f"serve pid {svc.pid} at {svc.edge_url} (uvloop: {extra['service']['uvloop']}); model registered; "
                  f"{args.bars:,} bars, {args.rows:,} rows, ping every {args.interval_ms} ms", flush=True)
            for k in range(1, args.repeat + 1):
                run = one_repeat(svc, work, args, k)
                runs.append(run)
                print(f"repeat {k}/{args.repeat}: ping p99 baseline {run['baseline']['p99_us'] / 1000:.2f} ms, "
                      f"ingest {run['ingest'].get('p99_us', float('nan')) / 1000:.2f} ms "
                      f"({run['ingest']['seconds']:.1f} s), predict_batch "
                      f"{run['predict_batch'].get('p99_us', float('nan')) / 1000:.2f} ms "
                      f"({run['predict_batch']['seconds']:.2f} s)", flush=True)
            extra["service"]["rss_kib_after"] = C.rss_kib(svc.pid)
    return report(args, runs, extra, machine)


def report(args: argparse.Namespace, runs: list[dict[str, Any]], extra: dict[str, Any],
           machine: dict[str, Any]) -> int:
    def med(phase: str, field: str, scale: float = 1000.0) -> float:
        return C.median(r[phase].get(field, float("nan")) / scale for r in runs)

    print(f"\nREST GET /api/v1/ping every {args.interval_ms} ms (ms); medians of {len(runs)} repeats")
    rows = [[phase, med(phase, "n", 1.0), med(phase, "p50_us"), med(phase, "p99_us"), med(phase, "max_us"),
             med(phase, "seconds", 1.0), med(phase, "lag_estimate_ms", 1.0) if phase != "baseline" else None]
            for phase in PHASES]
    C.print_table(["phase", "pings", "p50", "p99", "max", "phase s", "lag estimate ms"], rows)
    base_p50 = med("baseline", "p50_us")
    for phase in PHASES[1:]:
        print(f"  {phase}: p50 {med(phase, 'p50_us') / base_p50:.2f}x, p99 "
              f"{med(phase, 'p99_us') / med('baseline', 'p99_us'):.2f}x the baseline's")
    print()
    worst_p99 = max(med(phase, "p99_us") for phase in PHASES[1:])
    lag = max(med(phase, "lag_estimate_ms", 1.0) for phase in PHASES[1:])
    met = worst_p99 < TARGET_PING_P99_MS
    print(f"ping p99 during load < 20 ms: {'met' if met else 'NOT met'}")
    verdicts = [
        C.verdict(f"stall: ping p99 < 20 ms during a {args.bars:,}-bar ingest and a {args.rows:,}-row batch "
                  "prediction", met,
                  f"ingest {med('ingest', 'p99_us'):.2f} ms, predict_batch {med('predict_batch', 'p99_us'):.2f} ms "
                  f"(baseline {med('baseline', 'p99_us'):.2f} ms)"),
        C.verdict("stall: event loop's largest lag (estimated: slowest ping in a load phase - baseline p50)", None,
                  f"{lag:.1f} ms; ingest took {med('ingest', 'seconds', 1.0):.2f} s, predict_batch "
                  f"{med('predict_batch', 'seconds', 1.0):.2f} s"),
    ]
    errors = sum(r["ping_errors"] for r in runs)
    if errors:
        verdicts.append(C.verdict("stall: every ping answered 200", False, f"{errors} non-200 answers"))
    path = C.write_results("bench_stall", {"params": vars(args), "runs": runs, "verdicts": verdicts,
                                           "medians": {"rows": rows}, **extra}, machine)
    print(f"\nresults: {path}")
    return 0


def _roles(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--url")
    parser.add_argument("--broker")
    parser.add_argument("--interval-ms", type=float, default=2.0)
    parser.add_argument("--stop-file")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--as-maps", action="store_true")
    a = parser.parse_args(argv)
    if a.role == "_pinger":
        return role_pinger(a.url, a.interval_ms, a.stop_file, a.max_seconds)
    if a.role == "_load":
        return role_load(a.broker, a.bars, a.rows, a.timeout, not a.as_maps)
    raise SystemExit(f"unknown role {a.role!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_roles(sys.argv[1:]))
    sys.exit(main())
