#!/usr/bin/env python3
"""Models that keep learning: the live prediction path, learning from labels, and a training job.

1. Bar in -> prediction out on pub/sub: ``ml-processing serve`` with a 20-feature pipeline live on every
   bar and a 200-tree depth-6 xgboost model attached to it; a feed publishes ``bar.SYM.1m`` and waits for
   ``prediction.SYM`` of that bar. Target: p50 under 500 us. Reference in the same run: a raw pyzmq
   forwarder process (SUB, unpack, pack, PUB; bench_live.py's) under the same feed.
2. Learning from labels, in-process, the service's own per-label work (`Live.apply`: score the
   prediction, then learn the row) for a river logistic regression and a Hoeffding tree, against river's
   ``learn_one`` alone. Target: at least 20,000 labels/s for the logistic regression.
3. A typical training job: xgboost, 200 trees of depth 6, 10,000 rows x 16 features, as a job's worker
   runs it (`training.fit`: train, score the holdout, serialise), against ``xgboost.train`` alone in the
   same process. Target: under 1,000 ms.

    python bench/bench_online.py [--repeat 3] [--bars 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import xgboost as xgb
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_features as F
import bench_live as L

from ml_processing.bus import mdp
from ml_processing.plugins.models import training
from ml_processing.plugins.models.kinds import RiverPredictor, river_artifact
from ml_processing.plugins.models.online import Pending, Scores

TOML = """
[plugins.indicators]
live = []
persist = false
timeframes = []

[plugins.features]
live = ["bench20"]
warm_from_market = false

[plugins.features.pipelines.bench20]
steps = {steps}

[plugins.sentiment]
live_market = false

[plugins.patterns]
live = []

[plugins.models]
defaults = false
live = [{{model = "m20", horizon = 1}}]
"""


def toml_value(value: Any) -> str:
    """A TOML inline value of plain JSON-like data."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def bars_of(data: dict[str, np.ndarray], offset: int = 0) -> list[dict[str, Any]]:
    n = len(data["close"])
    return [{"ts": int(data["ts"][i]) + offset, **{k: float(data[k][i]) for k in ("open", "high", "low", "close",
                                                                                  "volume")}} for i in range(n)]


def prepare(client: mdp.Client) -> str:
    """Fit the 20-feature pipeline, train the 200-tree model on its rows, register it bound to the pipeline."""
    train = F.series(6_000, seed=21)
    fitted = client.request("features", "fit", {"pipeline": "bench20", **train})["pipeline"]
    rows = client.request("features", "transform", {"pipeline": fitted, **train})
    x = np.asarray(rows["values"])
    index = np.asarray(rows["index"])
    keep = index < len(train["close"]) - 1
    y = (train["close"][index[keep] + 1] > train["close"][index[keep]]).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 1, "seed": 1,
                         "tree_method": "hist"}, xgb.DMatrix(x[keep], label=y), num_boost_round=200)
    client.request("models", "register", {"model_id": "m20", "kind": "xgboost", "format": "ubj",
                                          "artifact": bytes(booster.save_raw(raw_format="ubj")),
                                          "pipeline": fitted})
    return fitted


def live_latency(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes], bars: list[dict[str, Any]], topic: bytes,
                 answer: bytes, skip: int) -> dict[str, float]:
    """Publish one bar at a time; the time until the answer about that very bar (matched by ts) arrives."""
    samples = []
    deadline = time.monotonic() + 60
    for i, bar in enumerate(bars):
        t = time.perf_counter_ns()
        pub.send_multipart([topic, msgpack.packb(bar)])
        waiting = i >= skip  # before the lookback the service answers nothing
        while waiting:
            if not sub.poll(2000):
                raise SystemExit(f"no answer for bar {i} within 2 s")
            got, body = sub.recv_multipart()
            if got == answer and msgpack.unpackb(body)["ts"] == bar["ts"]:
                samples.append(time.perf_counter_ns() - t)
                break
        if time.monotonic() > deadline:
            break
    return C.summarize_ns(samples[50:])


def learning_rates(n: int = 20_000) -> dict[str, float]:
    """Labels per second: the service's per-label work (score, then learn) vs river's learn_one alone."""
    from river import linear_model, tree

    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    names = ["log_return_1", "volatility_20", "RSI_14", "zscore_20(volume)"]
    out: dict[str, float] = {}
    for label, make in (("logistic", linear_model.LogisticRegression), ("hoeffding", tree.HoeffdingTreeClassifier)):
        bare = make()
        rows = [dict(zip(names, r, strict=True)) for r in x.tolist()]
        t = time.perf_counter()
        for row, target in zip(rows, y.tolist(), strict=True):
            bare.learn_one(row, target)
        out[f"{label}_river_alone"] = n / (time.perf_counter() - t)
        predictor = RiverPredictor(make(), {"task": "classification", "n_features": 4, "classes": [0, 1],
                                            "features": names})
        scores = Scores()
        t = time.perf_counter()
        for row, target in zip(x, y.tolist(), strict=True):
            pending = Pending(1, [], 1, {0: 0.4, 1: 0.6}, {})  # the prediction made when the bar came
            scores.update(target, pending.predicted, pending.proba)
            predictor.learn(row, target)
        out[f"{label}_service"] = n / (time.perf_counter() - t)
        river_artifact(predictor.model)  # a checkpoint of it serialises
    return out


def training_job(rows: int = 10_000, features: int = 16) -> dict[str, float]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(rows, features))
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    split = int(rows * 0.8)
    t = time.perf_counter()
    xgb.train({**training.XGBOOST_DEFAULTS, "max_depth": 6}, xgb.DMatrix(x[:split], label=y[:split]),
              num_boost_round=200)
    alone = time.perf_counter() - t
    times = {}
    for threads in (1, 2):
        t = time.perf_counter()
        result = training.fit("xgboost", "classification", {"n_estimators": 200, "max_depth": 6}, x[:split],
                              y[:split], x[split:], y[split:], [f"f{i}" for i in range(features)], None, threads)
        times[threads] = time.perf_counter() - t
    return {"xgboost_alone_ms": alone * 1000, "job_ms": times[1] * 1000, "job_2_threads_ms": times[2] * 1000,
            "accuracy": result["metrics"]["accuracy"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bars", type=int, default=2000)
    args = parser.parse_args()
    runs = []
    toml = TOML.format(steps=toml_value(F.TWENTY["steps"]))
    with C.Service(extra_toml=toml, start_timeout=120) as svc, C.ProcessGroup() as group:
        client = mdp.Client(svc.broker, timeout=60.0)
        prepare(client)
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        raw_in, raw_out = C.free_ports(2)
        forwarder = group.start([C.PYTHON, "-c", L.FORWARDER, f"tcp://{C.HOST}:{raw_in}", f"tcp://{C.HOST}:{raw_out}"],
                                stdout=__import__("subprocess").PIPE, text=True)
        assert forwarder.stdout is not None and forwarder.stdout.readline().strip() == "ready"
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        for sock in (pub, sub):
            sock.setsockopt(zmq.LINGER, 0)
        pub.connect(f"tcp://{C.HOST}:{svc.pub_in_port}")
        sub.connect(f"tcp://{C.HOST}:{svc.pub_out_port}")
        sub.setsockopt(zmq.SUBSCRIBE, b"prediction.")
        raw = L.connect(ctx, raw_in, raw_out)
        time.sleep(0.5)  # both subscriptions in place before the first bar (the first 50 samples are dropped)
        lookback = 50  # bench20 starts at bar 50 (its longest window: zscore_50(volume))
        for repeat in range(1, args.repeat + 1):
            data = F.series(args.bars, seed=100 + repeat)
            bars = bars_of(data, offset=repeat * 10**10)
            run = {"raw": L.latency(*raw, bars[: args.bars]),
                   "ours": live_latency(pub, sub, bars, b"bar.SYM.1m", b"prediction.SYM", lookback),
                   "learning": learning_rates(), "training": training_job()}
            runs.append(run)
            print(f"repeat {repeat}: bar -> prediction p50 {run['ours']['p50_us']:.0f} us p99 "
                  f"{run['ours']['p99_us']:.0f} us (raw forwarder {run['raw']['p50_us']:.0f} us); river logistic "
                  f"{run['learning']['logistic_service']:,.0f} labels/s; training job {run['training']['job_ms']:.0f} ms")
        live = client.request("models", "live", {})
        client.close()
        for sock in (pub, sub, *raw):
            sock.close(0)
        ctx.term()
    med = {
        "ours_p50": C.median(r["ours"]["p50_us"] for r in runs), "ours_p99": C.median(r["ours"]["p99_us"] for r in runs),
        "raw_p50": C.median(r["raw"]["p50_us"] for r in runs),
        **{k: C.median(r["learning"][k] for r in runs) for k in runs[0]["learning"]},
        **{k: C.median(r["training"][k] for r in runs) for k in ("xgboost_alone_ms", "job_ms", "job_2_threads_ms")},
    }
    print(f"\nmedians of {len(runs)} repeats")
    C.print_table(["measure", "reference", "ours", "ratio"], [
        ("bar -> prediction (20 features, 200 trees), p50", f"{med['raw_p50']:.0f} us (raw forwarder)",
         f"{med['ours_p50']:.0f} us", f"{med['ours_p50'] / med['raw_p50']:.2f}"),
        ("same, p99", "", f"{med['ours_p99']:.0f} us", ""),
        ("river logistic regression, labels/s", f"{med['logistic_river_alone']:,.0f} (learn_one alone)",
         f"{med['logistic_service']:,.0f}", f"{med['logistic_service'] / med['logistic_river_alone']:.2f}"),
        ("river Hoeffding tree, labels/s", f"{med['hoeffding_river_alone']:,.0f} (learn_one alone)",
         f"{med['hoeffding_service']:,.0f}", f"{med['hoeffding_service'] / med['hoeffding_river_alone']:.2f}"),
        ("training job: xgboost 200 trees, 10,000 x 16", f"{med['xgboost_alone_ms']:.0f} ms (xgboost.train alone)",
         f"{med['job_ms']:.0f} ms", f"{med['job_ms'] / med['xgboost_alone_ms']:.2f}"),
        ("same, training_threads = 2", "", f"{med['job_2_threads_ms']:.0f} ms", "")])
    print(f"\nlive labels joined in the service: {live['counts']['labels']:,}; predictions {live['counts']['predictions']:,}")
    print()
    verdicts = [
        C.verdict("online: bar in -> prediction out, 20 features, 200 trees, p50 under 500 us", med["ours_p50"] < 500,
                  f"{med['ours_p50']:.0f} us (raw forwarder {med['raw_p50']:.0f} us)"),
        C.verdict("online: river logistic regression learns >= 20,000 labels/s", med["logistic_service"] >= 20_000,
                  f"{med['logistic_service']:,.0f} labels/s"),
        C.verdict("online: river Hoeffding tree labels/s (reported)", None, f"{med['hoeffding_service']:,.0f} labels/s"),
        C.verdict("online: training job, xgboost 200 trees on 10,000 x 16, under 1,000 ms", med["job_ms"] < 1000,
                  f"{med['job_ms']:.0f} ms (xgboost.train alone {med['xgboost_alone_ms']:.0f} ms; with 2 threads "
                  f"{med['job_2_threads_ms']:.0f} ms)"),
    ]
    C.write_results("bench_online", {"params": vars(args), "runs": runs, "medians": med, "verdicts": verdicts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
