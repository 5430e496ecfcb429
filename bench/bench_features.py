#!/usr/bin/env python3
"""Feature pipelines: batch extraction and one-bar streaming, against TA-Lib in the same run.

1. In the actor: the 20-feature pipeline below extracted from 10,000 bars (`pipeline.extract`, what the
   ``features`` service runs for a request), beside the TA-Lib calls it makes, made directly (the
   reference). Target: under 5 ms.
2. Over MDP: the same as a ``features.extract`` request to ``ml-processing serve`` (arrays as the ndarray
   ext type, the cache bypassed by changing one value each time). Information.
3. Streaming: one bar -> one row of the 20 features (`PipelineStream.update` plus the fitted transforms),
   after a 1,000-bar warm-up. Target: under 50 us.

    python bench/bench_features.py [--repeat 3] [--iterations 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import talib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_indicators as I

from ml_processing.bus import mdp
from ml_processing.bus.memory import retain_freed_memory
from ml_processing.core.config import KernelConfig
from ml_processing.plugins.features import pipeline as P
from ml_processing.plugins.features.examples import TWENTY_FEATURES
from ml_processing.plugins.features.extractors import builtin_extractors
from ml_processing.plugins.indicators import builtin_indicators

REGISTRIES: dict[str, Any] = {"indicators": {i.name: i for i in builtin_indicators()},
                              "features": {e.name: e for e in builtin_extractors()}}

#: 20 features: indicators, returns, volatility, z-scores, lags, differences, ratios, candle shape, time.
TWENTY: dict[str, Any] = TWENTY_FEATURES


def series(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    """The indicators bench's random walk, with the bar timestamps the pipelines read."""
    return {"ts": 1_700_000_000_000 + 60_000 * np.arange(n, dtype=np.float64), **I.series(n, seed)}


def talib_alone(d: dict[str, np.ndarray]) -> None:
    """The TA-Lib calls the pipeline makes (its indicators and the rolling statistics of its extractors)."""
    returns = np.log(d["close"][1:] / d["close"][:-1])
    talib.STDDEV(returns, timeperiod=20)
    talib.SMA(d["close"], timeperiod=20)
    talib.STDDEV(d["close"], timeperiod=20)
    talib.SMA(d["volume"], timeperiod=50)
    talib.STDDEV(d["volume"], timeperiod=50)
    talib.RSI(d["close"], timeperiod=14)
    talib.ATR(d["high"], d["low"], d["close"], timeperiod=14)
    talib.EMA(d["close"], timeperiod=12)
    talib.EMA(d["close"], timeperiod=26)
    talib.ADX(d["high"], d["low"], d["close"], timeperiod=14)
    talib.MFI(d["high"], d["low"], d["close"], d["volume"], timeperiod=14)
    talib.SMA(d["volume"], timeperiod=30)


def streaming(compiled: P.Compiled, fitted: Any, data: dict[str, np.ndarray], warmup: int = 1000) -> dict[str, float]:
    stream = P.PipelineStream(compiled, fitted)
    bars = [{k: float(v[i]) for k, v in data.items()} for i in range(len(data["close"]))]
    for bar in bars[:warmup]:
        stream.transformed(stream.update(bar))
    samples = []
    for bar in bars[warmup:]:
        t = time.perf_counter_ns()
        stream.transformed(stream.update(bar))
        samples.append(time.perf_counter_ns() - t)
    return C.summarize_ns(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--bars", type=int, default=10_000)
    args = parser.parse_args()
    retain_freed_memory(KernelConfig().retain_memory_mb)  # as `ml-processing serve` runs
    compiled = P.compile_spec(TWENTY, REGISTRIES)
    assert len(compiled.features) == 20, compiled.features
    data = series(args.bars)
    fitted = P.fit(compiled, P.extract(compiled, series(5_000, seed=9)))
    runs = []
    with C.Service() as svc:
        client = mdp.Client(svc.broker, timeout=10.0)
        ref = client.request("features", "create", {"name": "bench20", **TWENTY})["pipeline"]
        wire = dict(data)
        for repeat in range(1, args.repeat + 1):

            def over_mdp() -> None:
                wire["close"] = wire["close"].copy()
                wire["close"][-1] *= 1.0000001  # a new input each time: no cache hit
                client.request("features", "extract", {"pipeline": ref, **wire})

            run = {"talib": C.timed(lambda: talib_alone(data), args.iterations),
                   "actor": C.timed(lambda: P.extract(compiled, data), args.iterations),
                   "mdp": C.timed(over_mdp, args.iterations),
                   "stream": streaming(compiled, fitted, series(6_000, seed=repeat))}
            runs.append(run)
            print(f"repeat {repeat}: TA-Lib alone {run['talib']['p50_us']:.0f} us, extract in the actor "
                  f"{run['actor']['p50_us']:.0f} us, over MDP {run['mdp']['p50_us']:.0f} us; one bar -> row "
                  f"p50 {run['stream']['p50_us']:.1f} us p99 {run['stream']['p99_us']:.1f} us")
        client.close()
    med = {k: C.median(r[k]["p50_us"] for r in runs) for k in runs[0]}
    p99 = C.median(r["stream"]["p99_us"] for r in runs)
    print(f"\n20 features, {args.bars:,} bars; medians of {len(runs)} repeats (us)")
    C.print_table(["measure", "p50"], [
        ("the pipeline's TA-Lib calls alone (reference)", C.fmt(med["talib"])),
        ("extract in the actor (pipeline.extract)", f"{C.fmt(med['actor'])} ({med['actor'] / med['talib']:.2f}x)"),
        ("features.extract over MDP (ndarray ext in and out)", C.fmt(med["mdp"])),
        ("one bar -> one transformed row of 20 features", f"{med['stream']:.1f} (p99 {p99:.1f})")])
    print()
    verdicts = [
        C.verdict(f"features: extract 20 features from {args.bars:,} bars in the actor under 5 ms", med["actor"] < 5000,
                  f"{med['actor'] / 1000:.2f} ms (TA-Lib calls alone {med['talib'] / 1000:.2f} ms)"),
        C.verdict("features: one bar -> one row of 20 features under 50 us", med["stream"] < 50,
                  f"p50 {med['stream']:.1f} us"),
    ]
    C.write_results("bench_features", {"params": vars(args), "runs": runs, "medians_p50_us": med,
                                       "verdicts": verdicts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
