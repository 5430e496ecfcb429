#!/usr/bin/env python3
"""Batch indicators: the service's compute against calling TA-Lib directly, in the same run.

1. In the actor: `compute()` (what the ``indicators`` service runs: parsing, parameter checks, lookback,
   output naming) for 10 indicators over 100,000 bars given as float64 arrays, against the same 10 TA-Lib
   calls made directly. Target: within 1.2x.
2. Over MDP: the same request to ``ml-processing serve`` with arrays as the ndarray ext type, from this
   process; then from a client process of its own, twice: with malloc as it is, and after
   `retain_freed_memory` (``ml_processing.bus.memory``), as the serve process runs; with the page faults
   of each request (a 12 MB reply whose copies land in fresh memory faults its pages in one by one).
3. REST end to end: ``POST /api/v1/indicators`` with 10 indicators on 10,000 bars (one client), beside the
   TA-Lib time of the same work. Target: p50 under 8 ms as JSON, and within 1.5x of msgpack. Twice with a
   body built once: as JSON columns (reply read, not parsed), and as msgpack with float64 arrays
   (``Content-Type``/``Accept: application/msgpack``, reply decoded). Then as three clients that build
   every request from their numpy arrays and turn the reply back into arrays: the standard library's
   ``json`` (what a plain Python client does), orjson (``OPT_SERIALIZE_NUMPY``), and msgpack.
   Beside them, in this process, the four codec steps the edge runs for that request: reading the JSON body
   (`codec.decode_json`, columns straight to arrays) and writing the JSON reply (`codec.encode_json`), against
   msgpack's `codec.unpackb` and `codec.packb`. What JSON costs beyond msgpack in those steps alone, added to
   the msgpack request's time, is the least the JSON request can take with these codecs (its larger text
   crossing the socket not counted): the floor of the JSON/msgpack ratio.
4. The event loop during a large ingest: ``GET /api/v1/ping`` over and over while one MDP ``ingest`` of
   ``--ingest-bars`` bars (200,000 by default) runs in the same service. Target: ping p99 under 20 ms.

With ``--callgrind N`` it measures nothing of the above: it runs the serve process under valgrind's callgrind
and counts the instructions of N ``POST /api/v1/indicators`` requests (10 x 10k bars) as JSON and as
msgpack, counted only while those requests run (`callgrind_requests`): a measure the machine's load does not
move. The profiles stay in a temporary directory named in the output, for ``callgrind_annotate``.

    python bench/bench_indicators.py [--repeat 3] [--iterations 50] [--ingest-bars 200000]
    python bench/bench_indicators.py --callgrind 10
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import talib

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

from ml_processing.bus import codec, mdp
from ml_processing.core.ops import convert
from ml_processing.plugins.indicators.compute import compute
from ml_processing.plugins.indicators.ops import ComputeArgs
from ml_processing.plugins.indicators.talib_indicators import talib_indicators
from ml_processing.sdk.synthetic import market, rows

INDICATORS: list[Any] = ["SMA", "EMA", "RSI", {"name": "BBANDS", "params": {"timeperiod": 20}}, "MACD", "ATR",
                         "ADX", "STOCH", "OBV", "CCI"]


def series(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": rng.uniform(1e3, 1e5, n)}


def direct(data: dict[str, np.ndarray]) -> None:
    talib.SMA(data["close"], timeperiod=30)
    talib.EMA(data["close"], timeperiod=30)
    talib.RSI(data["close"], timeperiod=14)
    talib.BBANDS(data["close"], timeperiod=20)
    talib.MACD(data["close"])
    talib.ATR(data["high"], data["low"], data["close"])
    talib.ADX(data["high"], data["low"], data["close"])
    talib.STOCH(data["high"], data["low"], data["close"])
    talib.OBV(data["close"], data["volume"])
    talib.CCI(data["high"], data["low"], data["close"])


def ping_during_ingest(n: int) -> dict[str, Any]:
    """REST ping latencies while one MDP ingest of `n` one-minute bars runs (in a thread of this process)."""
    bars = rows(market(n))
    with C.Service(env={"MLP_BUS_REQUEST_TIMEOUT_MS": "600000"}) as svc:
        client = mdp.Client(svc.broker, timeout=600.0)
        done: dict[str, Any] = {}

        def ingest() -> None:
            started = time.perf_counter()
            done["reply"] = client.request("indicators", "ingest", {"symbol": "BENCH", "timeframe": "1m",
                                                                    "bars": bars})
            done["seconds"] = time.perf_counter() - started

        worker = threading.Thread(target=ingest)
        worker.start()
        latencies = []
        while worker.is_alive():
            started = time.perf_counter()
            with urllib.request.urlopen(svc.edge_url + "/api/v1/ping") as resp:
                resp.read()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.005)
        worker.join()
        client.close()
    latencies.sort()
    return {"bars": n, "ingest_s": done["seconds"], "committed": done["reply"]["committed"],
            "pings": len(latencies), "p50_ms": 1000 * C.percentile(latencies, 50),
            "p99_ms": 1000 * C.percentile(latencies, 99), "max_ms": 1000 * latencies[-1]}


#: One REST request of a `callgrind_requests` case: path, body, headers.
Case = tuple[str, bytes, dict[str, str]]

_SERVE = "import sys; from ml_processing.core.cli import main; sys.argv[0] = 'ml-processing'; sys.exit(main())"


def callgrind_requests(cases: dict[str, Case], count: int, extra_toml: str = "",
                       warm: Callable[[str, Callable[[Case], bytes]], None] | None = None) -> dict[str, float]:
    """Instructions per request of the serve process, per case: ``ml-processing serve`` runs under callgrind
    with instrumentation off; for each case, 5 requests warm it, then instrumentation is on for `count`
    requests only (one client, one kept-alive connection). `warm(url, post)` runs first (waiting for what
    the service loads at its first request)."""
    out = Path(tempfile.mkdtemp(prefix="mlp-callgrind-"))
    broker, pub_in, pub_out, edge = C.free_ports(4)
    toml = out / "plugins.toml"
    toml.write_text(C.PLUGINS_TOML.format(log_level="warning", data_dir=out / "var", host=C.HOST, broker=broker,
                                          pub_in=pub_in, pub_out=pub_out, edge=edge, uvloop="true") + extra_toml)
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/cg.%p",
            C.PYTHON, "-c", _SERVE, "serve", "--config", str(toml)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    found: dict[str, float] = {}
    with C.ProcessGroup() as group, open(out / "serve.log", "wb") as log:
        serve = group.start(argv, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
        C.wait_http(f"http://{C.HOST}:{edge}/health", 900, serve)
        conn = http.client.HTTPConnection(C.HOST, edge, timeout=600)

        def post(case: Case) -> bytes:
            try:
                conn.request("POST", case[0], body=case[1], headers=case[2])
                response = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):  # idle past the edge's keep-alive limit
                conn.close()
                conn.request("POST", case[0], body=case[1], headers=case[2])
                response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"{case[0]} answered {response.status}: {body[:300]!r}")
            return body

        def control(*args: str) -> None:
            subprocess.run(["callgrind_control", *args, str(serve.pid)], check=True, stdout=subprocess.DEVNULL,
                           timeout=600)

        if warm is not None:
            warm(f"http://{C.HOST}:{edge}", post)
        for name, case in cases.items():
            for _ in range(5):
                post(case)
            before = set(glob.glob(f"{out}/cg.*"))
            control("-i", "on")
            for _ in range(count):
                post(case)
            control("-i", "off")
            control("-d", name)
            dumps = sorted(set(glob.glob(f"{out}/cg.*")) - before)
            found[name] = sum(_total(path) for path in dumps) / count
            for path in dumps:
                os.rename(path, f"{out}/{name}.{Path(path).name}")
            print(f"{name}: {found[name] / 1e6:.2f} M instructions a request ({count} requests; profile "
                  f"{out}/{name}.cg.*)", flush=True)
        conn.close()
    return found


def _total(path: str) -> int:
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def count_instructions(count: int) -> int:
    """``--callgrind``: instructions per ``POST /api/v1/indicators`` (10 x 10k bars), JSON and msgpack."""
    small = series(10_000)
    cases: dict[str, Case] = {
        "json": ("/api/v1/indicators", json.dumps({**{k: v.tolist() for k, v in small.items()},
                                                   "indicators": INDICATORS}).encode(),
                 {"Content-Type": "application/json"}),
        "msgpack": ("/api/v1/indicators", codec.packb({**small, "indicators": INDICATORS}),
                    {"Content-Type": "application/msgpack", "Accept": "application/msgpack"})}
    found = callgrind_requests(cases, count)
    print(f"JSON / msgpack: {found['json'] / found['msgpack']:.2f}x the instructions")
    return 0


def codec_floor(med: dict[str, float], sizes: dict[str, int]) -> float:
    """Print where the JSON request's extra time goes (the edge's four codec steps, medians in us) and
    return the floor of the JSON/msgpack ratio: the msgpack request plus what JSON's codec steps cost more."""
    print(f"\nthe edge's codec steps for the 10 x 10k request, in this process (p50 us; "
          f"{sizes['numbers_in']:,} numbers in, {sizes['numbers_out']:,} out)")
    C.print_table(["step", "JSON", "msgpack", "JSON bytes", "msgpack bytes", "JSON ns a number"], [
        ("read the body", C.fmt(med["json_decode_10k"]), C.fmt(med["msgpack_decode_10k"]),
         f"{sizes['json_body']:,}", f"{sizes['msgpack_body']:,}",
         C.fmt(1000 * med["json_decode_10k"] / sizes["numbers_in"])),
        ("write the reply", C.fmt(med["json_encode_10k"]), C.fmt(med["msgpack_encode_10k"]),
         f"{sizes['json_reply']:,}", f"{sizes['msgpack_reply']:,}",
         C.fmt(1000 * med["json_encode_10k"] / sizes["numbers_out"]))])
    extra = (med["json_decode_10k"] + med["json_encode_10k"]) - (med["msgpack_decode_10k"]
                                                                  + med["msgpack_encode_10k"])
    floor = (med["rest_msgpack_10k"] + extra) / med["rest_msgpack_10k"]
    print(f"JSON's codec steps cost {extra:.0f} us more than msgpack's: with nothing else different, the JSON "
          f"request takes at least {floor:.2f}x the msgpack request ({med['rest_msgpack_10k']:.0f} us)")
    return floor


def role_mdp_client(broker: str, iterations: int, retain_mb: int) -> int:
    """``_mdp_client``: the 100k-bar request over MDP from this process alone, after `retain_freed_memory`
    when `retain_mb` > 0; prints its timing and the page faults per request as one JSON line."""
    import resource

    from ml_processing.bus.memory import retain_freed_memory

    retain_freed_memory(retain_mb)
    args = {**series(100_000), "indicators": INDICATORS}
    with mdp.Client(broker, timeout=30.0) as client:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        timing = C.timed(lambda: client.request("indicators", "compute", args), iterations)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (timing["n"] + 3)  # + warm-up
    print(json.dumps({**timing, "faults": faults}))
    return 0


def mdp_client(broker: str, iterations: int, retain_mb: int) -> dict[str, float]:
    """`role_mdp_client` in a process of its own."""
    done = subprocess.run([C.PYTHON, __file__, "_mdp_client", broker, str(iterations), str(retain_mb)],
                          capture_output=True, text=True, timeout=600, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--ingest-bars", type=int, default=200_000, help="0 skips the ingest measurement")
    parser.add_argument("--callgrind", type=int, default=0, metavar="N",
                        help="only count the instructions of N REST requests of each encoding (valgrind)")
    args = parser.parse_args()
    if args.callgrind:
        return count_instructions(args.callgrind)
    registry = {i.name: i for i in talib_indicators()}
    big, small = series(100_000), series(10_000)
    runs = []
    with C.Service() as svc:
        client = mdp.Client(svc.broker, timeout=10.0)
        body = json.dumps({**{k: v.tolist() for k, v in small.items()}, "indicators": INDICATORS}).encode()
        url = svc.edge_url + "/api/v1/indicators"

        packed = codec.packb({**small, "indicators": INDICATORS})
        binary = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}

        def rest() -> None:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as resp:
                resp.read()

        def rest_msgpack() -> None:
            request = urllib.request.Request(url, data=packed, headers=binary)
            with urllib.request.urlopen(request) as resp:
                codec.unpackb(resp.read())

        def post(data: bytes, headers: dict[str, str]) -> bytes:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers)) as resp:
                return resp.read()

        def as_arrays(values: dict[str, list[float | None]]) -> dict[str, np.ndarray]:
            return {k: np.array(v, dtype=np.float64) for k, v in values.items()}  # null -> NaN

        def client_stdlib() -> None:
            text = json.dumps({**{k: v.tolist() for k, v in small.items()}, "indicators": INDICATORS})
            as_arrays(json.loads(post(text.encode(), {"Content-Type": "application/json"}))["values"])

        def client_orjson() -> None:
            text = orjson.dumps({**small, "indicators": INDICATORS}, option=orjson.OPT_SERIALIZE_NUMPY)
            as_arrays(orjson.loads(post(text, {"Content-Type": "application/json"}))["values"])

        def client_msgpack() -> None:
            codec.unpackb(post(codec.packb({**small, "indicators": INDICATORS}), binary))

        slow = max(3, args.iterations // 5)  # the standard library client takes 10x longer
        columns = frozenset(small)  # the route's column fields: read straight to float64 arrays
        reply = compute(convert({**small, "indicators": INDICATORS}, ComputeArgs), registry)
        numbers_out = sum(np.asarray(v).size for v in reply["values"].values())
        sizes = {"json_body": len(body), "json_reply": len(codec.encode_json(reply)), "msgpack_body": len(packed),
                 "msgpack_reply": len(codec.packb(reply)), "numbers_in": sum(v.size for v in small.values()),
                 "numbers_out": numbers_out}

        for repeat in range(1, args.repeat + 1):
            run = {
                "talib_100k": C.timed(lambda: direct(big), args.iterations),
                "actor_100k": C.timed(lambda: compute(convert({**big, "indicators": INDICATORS}, ComputeArgs), registry),
                                      args.iterations),
                "mdp_100k": C.timed(lambda: client.request("indicators", "compute", {**big, "indicators": INDICATORS}),
                                  args.iterations),
                "mdp_100k_process": mdp_client(svc.broker, args.iterations, 0),
                "mdp_100k_retained": mdp_client(svc.broker, args.iterations, 256),
                "talib_10k": C.timed(lambda: direct(small), args.iterations),
                "rest_10k": C.timed(rest, args.iterations),
                "rest_msgpack_10k": C.timed(rest_msgpack, args.iterations),
                "client_stdlib_10k": C.timed(client_stdlib, slow, warmup=1),
                "client_orjson_10k": C.timed(client_orjson, args.iterations),
                "client_msgpack_10k": C.timed(client_msgpack, args.iterations),
                "json_decode_10k": C.timed(lambda: codec.decode_json(body, columns), args.iterations),
                "json_encode_10k": C.timed(lambda: codec.encode_json(reply), args.iterations),
                "msgpack_decode_10k": C.timed(lambda: codec.unpackb(packed), args.iterations),
                "msgpack_encode_10k": C.timed(lambda: codec.packb(reply), args.iterations),
            }
            runs.append(run)
            print(f"repeat {repeat}: TA-Lib 100k {run['talib_100k']['p50_us']:.0f} us, actor "
                  f"{run['actor_100k']['p50_us']:.0f} us, MDP {run['mdp_100k']['p50_us']:.0f} us (own process "
                  f"{run['mdp_100k_process']['p50_us']:.0f} us, {run['mdp_100k_process']['faults']:.0f} page "
                  f"faults a request; keeping freed memory {run['mdp_100k_retained']['p50_us']:.0f} us, "
                  f"{run['mdp_100k_retained']['faults']:.0f}); "
                  f"REST 10k {run['rest_10k']['p50_us']:.0f} us (TA-Lib {run['talib_10k']['p50_us']:.0f} us), "
                  f"as msgpack {run['rest_msgpack_10k']['p50_us']:.0f} us; clients: stdlib json "
                  f"{run['client_stdlib_10k']['p50_us']:.0f} us, orjson {run['client_orjson_10k']['p50_us']:.0f} us, "
                  f"msgpack {run['client_msgpack_10k']['p50_us']:.0f} us")
        client.close()
    ingest = ping_during_ingest(args.ingest_bars) if args.ingest_bars else None
    med = {k: C.median(r[k]["p50_us"] for r in runs) for k in runs[0]}
    rows = [
        ("10 indicators x 100k bars, compute() in the actor", med["talib_100k"], med["actor_100k"]),
        ("10 indicators x 100k bars, over MDP (ndarray ext)", med["talib_100k"], med["mdp_100k"]),
        ("  the same, from a client process of its own", med["talib_100k"], med["mdp_100k_process"]),
        ("  the same, that process keeping freed memory", med["talib_100k"], med["mdp_100k_retained"]),
        ("10 indicators x 10k bars, POST /api/v1/indicators (JSON)", med["talib_10k"], med["rest_10k"]),
        ("10 indicators x 10k bars, POST /api/v1/indicators (msgpack)", med["talib_10k"], med["rest_msgpack_10k"]),
        ("  the same, client: stdlib json, arrays in and out", med["talib_10k"], med["client_stdlib_10k"]),
        ("  the same, client: orjson, arrays in and out", med["talib_10k"], med["client_orjson_10k"]),
        ("  the same, client: msgpack, arrays in and out", med["talib_10k"], med["client_msgpack_10k"]),
    ]
    print(f"\nmedians of {len(runs)} repeats, p50 of {args.iterations} iterations each (us)")
    C.print_table(["test", "TA-Lib direct", "ours", "ratio"],
                  [(name, C.fmt(ref), C.fmt(ours), C.fmt(ours / ref, 2)) for name, ref, ours in rows])
    ratio = med["actor_100k"] / med["talib_100k"]
    print()
    verdicts = [C.verdict("indicators: batch compute in the actor within 1.2x of TA-Lib (100k bars)", ratio <= 1.2,
                          f"{ratio:.2f}x")]
    for key, label in (("rest_10k", "JSON"), ("rest_msgpack_10k", "msgpack")):
        verdicts.append(C.verdict(f"indicators: POST /api/v1/indicators ({label}), 10 x 10k bars, p50 < 8 ms",
                                  med[key] < 8000, f"{med[key] / 1000:.2f} ms"))
    json_ratio = med["rest_10k"] / med["rest_msgpack_10k"]
    verdicts.append(C.verdict("indicators: POST /api/v1/indicators, JSON within 1.5x of msgpack (same run)",
                              json_ratio < 1.5, f"{json_ratio:.2f}x"))
    floor = codec_floor(med, sizes)
    verdicts.append(C.verdict("indicators: the JSON/msgpack ratio's floor with these codecs (the codec steps "
                              "alone)", None, f"{floor:.2f}x"))
    verdicts.append(C.verdict("indicators: clients with arrays in and out, stdlib json / orjson / msgpack", None,
                              " / ".join(f"{med[k] / 1000:.2f} ms" for k in
                                         ("client_stdlib_10k", "client_orjson_10k", "client_msgpack_10k"))))
    if ingest is not None:
        print(f"\nREST ping during an MDP ingest of {args.ingest_bars:,} bars ({ingest['ingest_s']:.1f} s): "
              f"{ingest['pings']} pings, p50 {ingest['p50_ms']:.2f} ms, p99 {ingest['p99_ms']:.2f} ms, "
              f"max {ingest['max_ms']:.2f} ms")
        verdicts.append(C.verdict(f"indicators: REST ping p99 < 20 ms during a {args.ingest_bars:,}-bar ingest",
                                  ingest["p99_ms"] < 20, f"{ingest['p99_ms']:.2f} ms"))
    C.write_results("bench_indicators", {"params": vars(args), "runs": runs, "medians_p50_us": med, "sizes": sizes,
                                         "ingest": ingest, "verdicts": verdicts})
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_mdp_client"]:
        sys.exit(role_mdp_client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    sys.exit(main())
