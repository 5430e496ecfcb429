#!/usr/bin/env python3
"""ZeroMQ benchmarks: MDP round-trip latency (requirement 1) and 4-client throughput (requirement 3).

Ours: ``ml-processing serve`` (generated plugins.toml, template plugin, log level warning) on free ports;
clients call service ``echo`` op ``ping`` (a trivial actor served by the broker in its own process) with
the blocking ``mdp.Client.request`` over tcp://127.0.0.1 (request encoded, reply decoded, every time).

Reference, measured in the same run: a raw pyzmq REP socket in its own process echoing every message,
called by REQ sockets in other processes with the same request bytes (no MDP, no msgpack).

Every client is a separate process from its server. Latency: one client, warm-up, then N round trips or
D seconds, whichever first. Throughput: 4 client processes (each a blocking loop, started together on a
barrier), time-bounded; optionally also one process with ``mdp.AsyncClient`` and 4 concurrent loops.
Reference and ours alternate within each repeat so that noise hits both; the table quotes medians of the
repeats, and every repeat is kept in bench/results/bench_bus.json.

    python bench/bench_bus.py                      # 3 repeats, defaults below
    python bench/bench_bus.py --repeat 5 --profile # plus a py-spy profile of the serve process
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

TARGET_RATIO = 2.0  # requirement 1: our p50 within 2x of the raw REQ/REP p50
TARGET_P99_US = 500.0  # requirement 1: our p99 under 500 us
TARGET_RPS = 10_000.0  # requirement 3: 4 concurrent clients


def _payload() -> bytes:
    from ml_processing.bus import codec

    return codec.encode_request("ping", {})


# -- roles run in child processes ---------------------------------------------------------------------


def role_rep_server(endpoint: str, lifetime: float) -> int:
    """The reference: REP echo until `lifetime` seconds have passed (the parent normally stops it first)."""
    return C.serve_rep(endpoint, lifetime, lambda msg: msg)


def role_client(kind: str, endpoint: str, n: int, duration: float, warmup: int, start_at: float,
                service: str, op: str) -> int:
    """One blocking client: warm-up, wait for the barrier, then up to `n` round trips or `duration` s."""
    import zmq

    payload = _payload()
    perf = time.perf_counter_ns
    if kind == "raw":
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)  # a lost reply fails the run instead of hanging it
        sock.connect(endpoint)

        def call() -> None:
            sock.send(payload)
            if sock.recv() != payload:
                raise RuntimeError("REP echoed something else")

        def close() -> None:
            sock.close(0)
            ctx.term()
    elif kind == "mdp":
        from ml_processing.bus import mdp

        client = mdp.Client(endpoint, timeout=5.0)
        if client.request(service, op) is None:
            raise RuntimeError("no result")

        def call() -> None:
            client.request(service, op)

        close = client.close
    else:
        raise SystemExit(f"unknown client kind {kind!r}")

    try:
        for _ in range(warmup):
            call()
        on_time = C.wait_until(start_at)
        samples = []
        append = samples.append
        t0 = time.time()
        end = time.monotonic() + duration
        check = time.monotonic
        for i in range(n):
            if (i & 63) == 0 and check() > end:
                break
            s = perf()
            call()
            append(perf() - s)
        t1 = time.time()
    finally:
        close()
    print(json.dumps({"kind": kind, "count": len(samples), "t0": t0, "t1": t1, "on_time": on_time,
                      "samples_ns": samples}))
    return 0


def role_async_clients(endpoint: str, concurrency: int, n: int, duration: float, warmup: int,
                       start_at: float, service: str, op: str) -> int:
    """One process, one `mdp.AsyncClient`, `concurrency` concurrent request loops (uvloop when present)."""
    import zmq.asyncio

    from ml_processing.bus import mdp

    async def main() -> dict[str, Any]:
        client = mdp.AsyncClient(endpoint, timeout=5.0, context=zmq.asyncio.Context())
        perf = time.perf_counter_ns
        samples: list[int] = []
        try:
            async def warm() -> None:
                for _ in range(warmup):
                    await client.request(service, op)

            await asyncio.gather(*(warm() for _ in range(concurrency)))
            delay = start_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            end = time.monotonic() + duration
            per_loop = max(1, n // concurrency)

            async def loop() -> None:
                for i in range(per_loop):
                    if (i & 63) == 0 and time.monotonic() > end:
                        return
                    s = perf()
                    await client.request(service, op)
                    samples.append(perf() - s)

            t0 = time.time()
            await asyncio.gather(*(loop() for _ in range(concurrency)))
            t1 = time.time()
        finally:
            client.close()
        return {"t0": t0, "t1": t1, "samples_ns": samples}

    loop_name = "asyncio"
    try:
        import uvloop

        result = uvloop.run(main())
        loop_name = "uvloop"
    except ImportError:
        result = asyncio.run(main())
    result.update(kind="mdp-async", count=len(result["samples_ns"]), loop=loop_name, on_time=True)
    print(json.dumps(result))
    return 0


# -- the orchestrating side ---------------------------------------------------------------------------


def _client_argv(kind: str, endpoint: str, args: argparse.Namespace, *, n: int, duration: float,
                 start_at: float) -> list[str]:
    return [C.PYTHON, __file__, "_client", "--kind", kind, "--endpoint", endpoint, "--n", str(n),
            "--duration", str(duration), "--warmup", str(args.warmup), "--start-at", repr(start_at),
            "--service", args.service, "--op", args.op]


def run_clients(kind: str, endpoint: str, args: argparse.Namespace, *, clients: int, n: int,
                duration: float) -> dict[str, Any]:
    """Start `clients` client processes on one barrier; aggregate their samples and throughput."""
    start_at = time.time() + args.startup + 0.2 * clients
    timeout = args.startup + 0.2 * clients + duration + 60
    with C.ProcessGroup() as group:
        if kind == "mdp-async":
            argv = [C.PYTHON, __file__, "_async_clients", "--endpoint", endpoint, "--concurrency", str(clients),
                    "--n", str(n * clients), "--duration", str(duration), "--warmup", str(args.warmup),
                    "--start-at", repr(start_at), "--service", args.service, "--op", args.op]
            procs = [group.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
        else:
            procs = [group.start(_client_argv(kind, endpoint, args, n=n, duration=duration, start_at=start_at),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(clients)]
        results = C.collect(procs, timeout, group)
    samples = [s for r in results for s in r["samples_ns"]]
    total = sum(r["count"] for r in results)
    window = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    late = sum(1 for r in results if not r.get("on_time", True))
    out = {"kind": kind, "clients": clients, "processes": len(procs), "requests": total,
           "window_s": window, "rps": total / window if window > 0 else float("nan"), "late_clients": late,
           **C.summarize_ns(samples)}
    if "loop" in results[0]:
        out["loop"] = results[0]["loop"]
    return out


def profile_mdp(svc: C.Service, args: argparse.Namespace) -> dict[str, Any] | None:
    """py-spy the serve process while 4 MDP clients load it (separate from the measured runs)."""
    out = C.RESULTS_DIR / "profile_bus.collapsed"
    seconds = max(3, int(args.profile_seconds))
    start_at = time.time() + args.startup + 0.8
    with C.ProcessGroup() as group:
        procs = [group.start(_client_argv("mdp", svc.broker, args, n=10_000_000, duration=seconds + 3,
                                          start_at=start_at),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        time.sleep(max(0.0, start_at - time.time()) + 1.0)
        spy = C.start_py_spy(group, svc.pid, seconds, out)
        summary = C.finish_py_spy(group, spy, out, seconds, "serve process under 4 MDP clients") if spy else None
        C.collect(procs, seconds + 60, group)
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the table quotes medians (default 3)")
    parser.add_argument("--n", type=int, default=20_000, help="latency: round trips per run (default 20000)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="latency: time bound per run (default 20)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up round trips per client (default 1000)")
    parser.add_argument("--clients", type=int, default=4, help="throughput: concurrent clients (default 4)")
    parser.add_argument("--tput-seconds", type=float, default=5.0, help="throughput: seconds per run (default 5)")
    parser.add_argument("--tput-n", type=int, default=200_000, help="throughput: cap per client (default 200000)")
    parser.add_argument("--async-client", action=argparse.BooleanOptionalAction, default=True,
                        help="also run one AsyncClient process with --clients loops (default on)")
    parser.add_argument("--service", default="echo")
    parser.add_argument("--op", default="ping")
    parser.add_argument("--startup", type=float, default=1.5, help="seconds allowed for client processes to start")
    parser.add_argument("--profile", action="store_true", help="py-spy the serve process under MDP load")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    args = parser.parse_args()
    C.exit_on_sigterm()
    machine = C.machine_info()
    if args.repeat < 1 or args.n < 1:
        parser.error("--repeat and --n must be positive")

    ref_endpoint = f"tcp://{C.HOST}:{C.free_port()}"
    runs: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with C.ProcessGroup() as group, C.Service() as svc:
        lifetime = 600 + args.repeat * (2 * args.max_seconds + 3 * args.tput_seconds + 60)
        rep = group.start([C.PYTHON, __file__, "_rep_server", "--endpoint", ref_endpoint,
                           "--lifetime", str(lifetime)], stdout=subprocess.DEVNULL)
        extra["service"] = {"pid": svc.pid, "broker": svc.broker, "uvloop": C.uses_uvloop(svc.pid),
                            "rss_kib_before": C.rss_kib(svc.pid)}
        print(f"serve pid {svc.pid} on {svc.broker} (uvloop: {extra['service']['uvloop']}); "
              f"reference REP pid {rep.pid} on {ref_endpoint}", flush=True)
        for i in range(args.repeat):
            run: dict[str, Any] = {"repeat": i + 1}
            for key, kind, endpoint in (("lat_ref", "raw", ref_endpoint), ("lat_ours", "mdp", svc.broker)):
                run[key] = run_clients(kind, endpoint, args, clients=1, n=args.n, duration=args.max_seconds)
            for key, kind, endpoint in (("tput_ref", "raw", ref_endpoint), ("tput_ours", "mdp", svc.broker)):
                run[key] = run_clients(kind, endpoint, args, clients=args.clients, n=args.tput_n,
                                       duration=args.tput_seconds)
            if args.async_client:
                run["tput_ours_async"] = run_clients("mdp-async", svc.broker, args, clients=args.clients,
                                                     n=args.tput_n, duration=args.tput_seconds)
            if rep.poll() is not None or svc.proc is None or svc.proc.poll() is not None:
                raise RuntimeError("a server died during the run")
            runs.append(run)
            print(f"repeat {i + 1}/{args.repeat}: latency p50 ref {run['lat_ref']['p50_us']:.1f} us, "
                  f"ours {run['lat_ours']['p50_us']:.1f} us (p99 {run['lat_ours']['p99_us']:.1f}); "
                  f"{args.clients} clients ref {run['tput_ref']['rps']:,.0f}/s, "
                  f"ours {run['tput_ours']['rps']:,.0f}/s", flush=True)
        extra["service"]["rss_kib_after"] = C.rss_kib(svc.pid)
        if args.profile:
            extra["profile"] = profile_mdp(svc, args)

    def med(key: str, field: str) -> float:
        return C.median(r[key][field] for r in runs if key in r)

    rows = []
    labels = {"lat_ref": "latency, 1 client", "tput_ref": f"throughput, {args.clients} client processes"}
    for ref_key, ours_key in (("lat_ref", "lat_ours"), ("tput_ref", "tput_ours")):
        rows.append([labels[ref_key], med(ref_key, "p50_us"), med(ref_key, "p99_us"), med(ours_key, "p50_us"),
                     med(ours_key, "p99_us"), med(ours_key, "p50_us") / med(ref_key, "p50_us"),
                     med(ref_key, "rps"), med(ours_key, "rps")])
    if args.async_client:
        rows.append([f"throughput, 1 AsyncClient x {args.clients} loops", float("nan"), float("nan"),
                     med("tput_ours_async", "p50_us"), med("tput_ours_async", "p99_us"), float("nan"),
                     float("nan"), med("tput_ours_async", "rps")])
    print(f"\nMDP over tcp, {args.service}.{args.op}; medians of {len(runs)} repeats (us = microseconds)")
    C.print_table(["test", "ref p50", "ref p99", "ours p50", "ours p99", "p50 ratio", "ref req/s", "ours req/s"],
                  rows)

    ratio = med("lat_ours", "p50_us") / med("lat_ref", "p50_us")
    p99 = med("lat_ours", "p99_us")
    rps = med("tput_ours", "rps")
    verdicts = [
        {"requirement": "1. MDP p50 within 2x of raw REQ/REP", "pass": ratio <= TARGET_RATIO,
         "detail": f"ours {med('lat_ours', 'p50_us'):.1f} us vs ref {med('lat_ref', 'p50_us'):.1f} us = "
                   f"{ratio:.2f}x (target <= {TARGET_RATIO}x)"},
        {"requirement": "1. MDP p99 under 500 us", "pass": p99 < TARGET_P99_US,
         "detail": f"ours p99 {p99:.1f} us (target < {TARGET_P99_US:.0f} us; ref p99 {med('lat_ref', 'p99_us'):.1f})"},
        {"requirement": f"3. throughput, {args.clients} client processes", "pass": rps >= TARGET_RPS,
         "detail": f"ours {rps:,.0f} req/s (target >= {TARGET_RPS:,.0f}; ref {med('tput_ref', 'rps'):,.0f} req/s)"},
    ]
    if args.async_client:
        verdicts.append({"requirement": f"3. throughput, 1 AsyncClient x {args.clients} loops (info)", "pass": None,
                         "detail": f"ours {med('tput_ours_async', 'rps'):,.0f} req/s"})
    print()
    for v in verdicts:
        print(f"[{ {True: 'PASS', False: 'FAIL', None: 'info'}[v['pass']] }] {v['requirement']}: {v['detail']}")
    for run in runs:  # keep the summaries, not 20k samples per run
        for value in run.values():
            if isinstance(value, dict):
                value.pop("samples_ns", None)
    params = {k: v for k, v in vars(args).items()}
    path = C.write_results("bench_bus", {"params": params, "runs": runs, "verdicts": verdicts,
                                         "medians": {"rows": rows}, **extra}, machine)
    print(f"\nresults: {path}")
    return 0


def _roles(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--kind", default="mdp")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--start-at", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--service", default="echo")
    parser.add_argument("--op", default="ping")
    a = parser.parse_args(argv)
    if a.role == "_rep_server":
        return role_rep_server(a.endpoint, a.lifetime)
    if a.role == "_client":
        return role_client(a.kind, a.endpoint, a.n, a.duration, a.warmup, a.start_at, a.service, a.op)
    if a.role == "_async_clients":
        return role_async_clients(a.endpoint, a.concurrency, a.n, a.duration, a.warmup, a.start_at,
                                  a.service, a.op)
    raise SystemExit(f"unknown role {a.role!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_roles(sys.argv[1:]))
    sys.exit(main())
