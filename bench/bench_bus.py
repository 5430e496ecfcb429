#!/usr/bin/env python3
"""ZeroMQ benchmarks: MDP round-trip latency and 4-client throughput (requirements 1 and 3; issue 15 point 4).

Ours: ``ml-processing serve`` (generated plugins.toml, template plugin, log level warning) on free ports;
clients call service ``echo`` op ``ping`` (a trivial actor served by the broker in its own process) with
the blocking ``mdp.Client.request`` over tcp://127.0.0.1 (request encoded, reply decoded, every time), and
with ``mdp.AsyncClient.request`` from one asyncio loop (uvloop when present).

References, measured in the same run:

- *raw*: a raw pyzmq REP socket in its own process echoing every message, called by REQ sockets in other
  processes with the same request bytes (no MDP, no msgpack);
- *bare*: the same serve process called through the least client code possible: the MDP request frames
  (encoded once) sent on a plain DEALER socket and the reply's frames received, nothing decoded. Its gap
  to *raw* is the service's share; the gap between ours and *bare* is the client's.

Every client is a separate process from its server. Latency: one client process holding a REQ socket
(raw), a DEALER (bare), an ``mdp.Client`` and an ``mdp.AsyncClient``, which take turns request by request
(warm-up, then N rounds or D seconds, whichever first), so the noise of a busy machine falls on all alike.
Throughput: 4 client processes (each a blocking loop, started together on a barrier), time-bounded;
optionally also one process with ``mdp.AsyncClient`` and 4 concurrent loops. References and ours
alternate within each repeat; the table quotes medians of the repeats, and every repeat is kept in
bench/results/bench_bus.json.

    python bench/bench_bus.py                      # 3 repeats, defaults below
    python bench/bench_bus.py --repeat 5 --profile # plus a py-spy profile of the serve process
"""

from __future__ import annotations

import argparse
import asyncio
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
TARGET_CLIENT_RATIO = 1.2  # issue 15.4: Client and AsyncClient p50 within 1.2x of the raw REQ/REP p50
TARGET_TPUT_SHARE = 0.7  # issue 15.4: 4 client processes get >= 0.7x the raw echo's req/s


def _payload() -> bytes:
    from ml_processing.bus import codec

    return codec.encode_request("ping", {})


# -- roles run in child processes ---------------------------------------------------------------------


def role_rep_server(endpoint: str, lifetime: float) -> int:
    """The reference: REP echo until `lifetime` seconds have passed (the parent normally stops it first)."""
    return C.serve_rep(endpoint, lifetime, lambda msg: msg)


def _caller(kind: str, endpoint: str, service: str, op: str) -> tuple[Any, Any]:
    """``call()`` (one round trip, checked) and ``close()`` of a blocking client of `kind`."""
    import zmq

    payload = _payload()
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
    elif kind == "bare":  # the service seen through the least client code: MDP frames on a DEALER socket
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(endpoint)
        send, recv = zmq.backend.Socket.send, zmq.backend.Socket.recv
        header, name, more = [b"MDPC02", b"\x01"], service.encode(), int(zmq.SNDMORE)

        def call() -> None:
            send(sock, header[0], more)
            send(sock, header[1], more)
            send(sock, name, more)
            send(sock, payload, 0)
            frame = recv(sock, 0, False)
            while frame.more:
                frame = recv(sock, 0, False)

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
    return call, close


def role_client(kind: str, endpoint: str, n: int, duration: float, warmup: int, start_at: float,
                service: str, op: str) -> int:
    """One blocking client: warm-up, wait for the barrier, then up to `n` round trips or `duration` s."""
    perf = time.perf_counter_ns
    call, close = _caller(kind, endpoint, service, op)
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
    C.emit_json({"kind": kind, "count": len(samples), "t0": t0, "t1": t1, "on_time": on_time,
               "samples_ns": samples})
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
    C.emit_json(result)
    return 0


def role_paired(ref: str, broker: str, n: int, duration: float, warmup: int, service: str, op: str,
                with_async: bool) -> int:
    """Latency, one process: the raw REQ echo, the bare DEALER, `mdp.Client` and `mdp.AsyncClient` take turns
    request by request (the order rotating), so that the noise of a shared machine falls on all of them alike.
    Runs on uvloop when present (the AsyncClient's loop; the blocking calls simply hold it)."""
    import zmq.asyncio

    from ml_processing.bus import mdp

    kinds = ["raw", "bare", "mdp"]
    callers = {kind: _caller(kind, ref if kind == "raw" else broker, service, op) for kind in kinds}

    async def main() -> dict[str, list[int]]:
        client = mdp.AsyncClient(broker, timeout=5.0, context=zmq.asyncio.Context())
        samples: dict[str, list[int]] = {kind: [] for kind in [*kinds, *(["async"] if with_async else [])]}
        order = list(samples)
        perf = time.perf_counter_ns
        try:
            for _ in range(warmup):
                for kind in kinds:
                    callers[kind][0]()
                if with_async:
                    await client.request(service, op)
            end = time.monotonic() + duration
            for i in range(n):
                if (i & 63) == 0 and time.monotonic() > end:
                    break
                for j in range(len(order)):
                    kind = order[(i + j) % len(order)]
                    if kind == "async":
                        s = perf()
                        await client.request(service, op)
                        samples[kind].append(perf() - s)
                    else:
                        call = callers[kind][0]
                        s = perf()
                        call()
                        samples[kind].append(perf() - s)
        finally:
            client.close()
            for _, close in callers.values():
                close()
        return samples

    try:
        import uvloop

        result = uvloop.run(main())
    except ImportError:
        result = asyncio.run(main())
    C.emit_json(result)
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


def run_paired(ref: str, broker: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One `role_paired` process: a summary per kind (``raw``, ``bare``, ``mdp``, ``async``)."""
    argv = [C.PYTHON, __file__, "_paired", "--endpoint", ref, "--broker", broker, "--n", str(args.n),
            "--duration", str(args.max_seconds), "--warmup", str(args.warmup), "--service", args.service,
            "--op", args.op] + ([] if args.async_client else ["--no-async"])
    result = C.run_json(argv, timeout=args.max_seconds * 4 + 120)
    return {kind: {"kind": kind, "requests": len(samples), **C.summarize_ns(samples)}
            for kind, samples in result.items()}


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
        lifetime = 600 + args.repeat * (4 * args.max_seconds + 3 * args.tput_seconds + 60)  # generous
        rep = group.start([C.PYTHON, __file__, "_rep_server", "--endpoint", ref_endpoint,
                           "--lifetime", str(lifetime)], stdout=subprocess.DEVNULL)
        extra["service"] = {"pid": svc.pid, "broker": svc.broker, "uvloop": C.uses_uvloop(svc.pid),
                            "rss_kib_before": C.rss_kib(svc.pid)}
        print(f"serve pid {svc.pid} on {svc.broker} (uvloop: {extra['service']['uvloop']}); "
              f"reference REP pid {rep.pid} on {ref_endpoint}", flush=True)
        for i in range(args.repeat):
            run: dict[str, Any] = {"repeat": i + 1}
            paired = run_paired(ref_endpoint, svc.broker, args)
            for key, kind in (("lat_ref", "raw"), ("lat_bare", "bare"), ("lat_ours", "mdp"), ("lat_async", "async")):
                if kind in paired:
                    run[key] = paired[kind]
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
                  f"bare {run['lat_bare']['p50_us']:.1f} us, ours {run['lat_ours']['p50_us']:.1f} us "
                  f"(p99 {run['lat_ours']['p99_us']:.1f})"
                  + (f", async {run['lat_async']['p50_us']:.1f} us" if args.async_client else "")
                  + f"; {args.clients} clients ref {run['tput_ref']['rps']:,.0f}/s, "
                  f"ours {run['tput_ours']['rps']:,.0f}/s", flush=True)
        extra["service"]["rss_kib_after"] = C.rss_kib(svc.pid)
        if args.profile:
            extra["profile"] = profile_mdp(svc, args)

    def med(key: str, field: str) -> float:
        return C.median(r[key][field] for r in runs if key in r)

    nan = float("nan")
    ref_p50, ref_p99, ref_rps = med("lat_ref", "p50_us"), med("lat_ref", "p99_us"), med("tput_ref", "rps")
    rows = [["latency, 1 client: bare DEALER, MDP frames", ref_p50, ref_p99, med("lat_bare", "p50_us"),
             med("lat_bare", "p99_us"), med("lat_bare", "p50_us") / ref_p50, nan, nan],
            ["latency, 1 client: mdp.Client", ref_p50, ref_p99, med("lat_ours", "p50_us"), med("lat_ours", "p99_us"),
             med("lat_ours", "p50_us") / ref_p50, nan, nan]]
    if args.async_client:
        rows.append(["latency, 1 client: mdp.AsyncClient", ref_p50, ref_p99, med("lat_async", "p50_us"),
                     med("lat_async", "p99_us"), med("lat_async", "p50_us") / ref_p50, nan, nan])
    rows.append([f"throughput, {args.clients} client processes", med("tput_ref", "p50_us"), med("tput_ref", "p99_us"),
                 med("tput_ours", "p50_us"), med("tput_ours", "p99_us"),
                 med("tput_ours", "p50_us") / med("tput_ref", "p50_us"), ref_rps, med("tput_ours", "rps")])
    if args.async_client:
        rows.append([f"throughput, 1 AsyncClient x {args.clients} loops", nan, nan, med("tput_ours_async", "p50_us"),
                     med("tput_ours_async", "p99_us"), nan, nan, med("tput_ours_async", "rps")])
    print(f"\nMDP over tcp, {args.service}.{args.op}; medians of {len(runs)} repeats (us = microseconds); "
          f"ref = raw REQ/REP echo")
    C.print_table(["test", "ref p50", "ref p99", "ours p50", "ours p99", "p50 ratio", "ref req/s", "ours req/s"],
                  rows)

    ratio = med("lat_ours", "p50_us") / ref_p50
    p99 = med("lat_ours", "p99_us")
    rps = med("tput_ours", "rps")
    verdicts = [
        {"requirement": "1. MDP p50 within 2x of raw REQ/REP", "pass": ratio <= TARGET_RATIO,
         "detail": f"ours {med('lat_ours', 'p50_us'):.1f} us vs ref {ref_p50:.1f} us = "
                   f"{ratio:.2f}x (target <= {TARGET_RATIO}x)"},
        {"requirement": "1. MDP p99 under 500 us", "pass": p99 < TARGET_P99_US,
         "detail": f"ours p99 {p99:.1f} us (target < {TARGET_P99_US:.0f} us; ref p99 {ref_p99:.1f})"},
        {"requirement": f"3. throughput, {args.clients} client processes", "pass": rps >= TARGET_RPS,
         "detail": f"ours {rps:,.0f} req/s (target >= {TARGET_RPS:,.0f}; ref {ref_rps:,.0f} req/s)"},
        {"requirement": f"issue 15.4: mdp.Client p50 within {TARGET_CLIENT_RATIO}x of raw REQ/REP",
         "pass": ratio <= TARGET_CLIENT_RATIO,
         "detail": f"{med('lat_ours', 'p50_us'):.1f} us vs {ref_p50:.1f} us = {ratio:.2f}x (bare DEALER on the same "
                   f"service {med('lat_bare', 'p50_us') / ref_p50:.2f}x)"},
        {"requirement": f"issue 15.4: {args.clients} client processes get >= {TARGET_TPUT_SHARE}x the raw echo's req/s",
         "pass": rps >= TARGET_TPUT_SHARE * ref_rps,
         "detail": f"ours {rps:,.0f} req/s vs ref {ref_rps:,.0f} req/s = {rps / ref_rps:.2f}x"},
    ]
    if args.async_client:
        async_ratio = med("lat_async", "p50_us") / ref_p50
        verdicts.insert(4, {"requirement": f"issue 15.4: mdp.AsyncClient p50 within {TARGET_CLIENT_RATIO}x of raw "
                                           "REQ/REP", "pass": async_ratio <= TARGET_CLIENT_RATIO,
                            "detail": f"{med('lat_async', 'p50_us'):.1f} us vs {ref_p50:.1f} us = {async_ratio:.2f}x"})
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
    parser.add_argument("--broker", default="")
    parser.add_argument("--no-async", action="store_true")
    a = parser.parse_args(argv)
    if a.role == "_rep_server":
        return role_rep_server(a.endpoint, a.lifetime)
    if a.role == "_client":
        return role_client(a.kind, a.endpoint, a.n, a.duration, a.warmup, a.start_at, a.service, a.op)
    if a.role == "_paired":
        return role_paired(a.endpoint, a.broker, a.n, a.duration, a.warmup, a.service, a.op, not a.no_async)
    if a.role == "_async_clients":
        return role_async_clients(a.endpoint, a.concurrency, a.n, a.duration, a.warmup, a.start_at,
                                  a.service, a.op)
    raise SystemExit(f"unknown role {a.role!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_roles(sys.argv[1:]))
    sys.exit(main())
