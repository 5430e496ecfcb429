#!/usr/bin/env python3
"""The C++ client's one-row predict latency beside the Python client's and a raw REQ/REP echo, in one run.

Issue 16 point 3: with no Python on the client side, the round trip shows what the service itself costs.

One ``ml-processing serve`` on free ports (default models off, prediction cache off, so every request is
computed) with bench_models' xgboost classifier (200 trees, depth 6, 16 features) registered over REST. Each
measurement is one client process, one request at a time, cycling through the same 256 rows:

- *cpp*: ``mlp-cli latency`` of clients/cpp (built here with CMake, Release, into ``clients/cpp/build``),
  ``mlp::Client::predict`` over MDP/0.2: request encoded, reply decoded into a ``Prediction`` every time; it
  also reports the p50/p99 of ``latency_us``, the service's own time for each request;
- *python*: the blocking ``ml_processing.bus.mdp.Client.request("models", "predict", ...)``, as bench_models
  and bench_security measure it;
- *echo*: the reference, a raw pyzmq REP process echoing each message back, and a pyzmq REQ client process
  sending the very request bodies the others send (no MDP, no model): the transport's floor on this machine.

The three alternate (the order rotates with each repeat); the table quotes medians of the repeats; ratios are
against the echo and cpp / python.

    python bench/bench_cpp_client.py            # 3 repeats, up to 20,000 requests (20 s) per run
    python bench/bench_cpp_client.py --quick    # 1 repeat, 2,000 requests per run: checks the script works

Needs cmake, a C++17 compiler, pkg-config, libzmq, cppzmq and msgpack-cxx (Debian: cmake g++ pkg-config
libzmq3-dev cppzmq-dev libmsgpack-cxx-dev; clients/cpp/README.md).
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

SOURCE = C.BENCH_DIR.parent / "clients" / "cpp"
BUILD = SOURCE / "build"
SERVE_TOML = """
[cache]
prediction_cache_ttl = 0.0

[plugins.models]
defaults = false
"""
SIDES = ("cpp", "python", "echo")

# -- the Python clients, each in its own process ----------------------------------------------------------


def role_rep_server(endpoint: str, lifetime: float) -> int:
    """The echo: a bare REP socket answering each message with itself, until `lifetime` has passed."""
    return C.serve_rep(endpoint, lifetime, lambda msg: msg)


def role_client(kind: str, endpoint: str, rows_file: str, n: int, duration: float, warmup: int) -> int:
    """One request at a time, the rows in turn: ``python`` (mdp.Client predict) or ``echo`` (a REQ socket
    sending the predict request bodies of the same rows to the REP echo)."""
    import zmq

    from ml_processing.bus import codec, mdp

    rows = json.loads(Path(rows_file).read_text())
    if kind == "python":
        client = mdp.Client(endpoint, timeout=5.0)

        def call(i: int) -> None:
            client.request("models", "predict", {"model": M.MODEL_ID, "features": rows[i % len(rows)]})

        close = client.close
    elif kind == "echo":
        bodies = [codec.encode_request("predict", {"model": M.MODEL_ID, "features": row}) for row in rows]
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)  # a lost reply fails the run instead of hanging it
        sock.connect(endpoint)

        def call(i: int) -> None:
            body = bodies[i % len(bodies)]
            sock.send(body)
            if sock.recv() != body:
                raise RuntimeError("REP echoed something else")

        def close() -> None:
            sock.close(0)
            ctx.term()
    else:
        raise SystemExit(f"unknown client kind {kind!r}")
    perf = time.perf_counter_ns
    try:
        for i in range(warmup):
            call(i)
        samples = []
        end = time.monotonic() + duration
        for i in range(n):
            if (i & 63) == 0 and time.monotonic() > end:
                break
            s = perf()
            call(i)
            samples.append(perf() - s)
    finally:
        close()
    print(json.dumps({"kind": kind, "count": len(samples), "samples_ns": samples}))
    return 0


# -- the orchestrating side ---------------------------------------------------------------------------


def build(build_dir: Path) -> Path:
    """Configure (once) and build clients/cpp in Release; the path of ``mlp-cli``."""
    steps = [["cmake", "-S", str(SOURCE), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"],
             ["cmake", "--build", str(build_dir), "-j2"]]
    for argv in steps:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        except FileNotFoundError:
            raise RuntimeError("cmake is not installed (see clients/cpp/README.md)") from None
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return build_dir / "mlp-cli"


def register(svc: C.Service, model_path: Path) -> None:
    """bench_models' registration over REST, then wait (bounded) until the model answers over MDP."""
    from ml_processing.bus import errors, mdp

    M.register(svc, model_path)
    deadline = time.monotonic() + 60
    with mdp.Client(svc.broker, timeout=10.0) as client:
        while True:
            try:
                client.request("models", "predict", {"model": M.MODEL_ID, "features": [0.0] * M.N_FEATURES})
                return
            except errors.MlpError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)


def run_cpp(cli: Path, broker: str, rows_csv: Path, args: argparse.Namespace) -> dict[str, Any]:
    argv = [str(cli), "latency", M.MODEL_ID, "--rows-file", str(rows_csv), "--broker", broker, "--count",
            str(args.n), "--warmup", str(args.warmup), "--max-seconds", str(args.max_seconds)]
    result: dict[str, Any] = C.run_json(argv, timeout=args.max_seconds + 120)
    return result


def run_python(kind: str, endpoint: str, rows_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    argv = [C.PYTHON, __file__, "_client", "--kind", kind, "--endpoint", endpoint, "--rows-file", str(rows_file),
            "--n", str(args.n), "--duration", str(args.max_seconds), "--warmup", str(args.warmup)]
    result = C.run_json(argv, timeout=args.max_seconds + 120)
    return {"count": result["count"], **C.summarize_ns(result["samples_ns"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the table quotes medians (default 3)")
    parser.add_argument("--n", type=int, default=20_000, help="requests per run (default 20000)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time bound of a run (default 20)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up requests per run (default 1000)")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds for serve to answer /health")
    parser.add_argument("--build-dir", type=Path, default=BUILD, help=f"CMake build directory (default {BUILD})")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2,000 requests (5 s), 200 warm-up")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.n, args.max_seconds, args.warmup = 1, 2_000, 5.0, 200
    if args.repeat < 1 or args.n < 1:
        parser.error("--repeat and --n must be positive")
    C.exit_on_sigterm()
    machine = C.machine_info()
    t0 = time.perf_counter()
    cli = build(args.build_dir)
    extra: dict[str, Any] = {"build_s": round(time.perf_counter() - t0, 1), "cli": str(cli)}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlp-bench-cpp-") as tmp, C.ProcessGroup() as group:
        work = Path(tmp)
        model_path = work / f"{M.MODEL_ID}.ubj"
        extra["model"] = M.train_model(model_path)
        rows = M.make_rows(M.CYCLE_ROWS, seed=11)
        rows_json, rows_csv = work / "rows.json", work / "rows.csv"
        rows_json.write_text(json.dumps(rows))
        rows_csv.write_text("".join(",".join(repr(v) for v in row) + "\n" for row in rows))
        echo_endpoint = f"tcp://{C.HOST}:{C.free_port()}"
        lifetime = args.repeat * 3 * (args.max_seconds + 60) + 300
        group.start([C.PYTHON, __file__, "_rep_server", "--endpoint", echo_endpoint, "--lifetime", str(lifetime)])
        with C.Service(start_timeout=args.start_timeout, extra_toml=SERVE_TOML) as svc:
            register(svc, model_path)
            extra["service"] = {"pid": svc.pid, "broker": svc.broker, "uvloop": C.uses_uvloop(svc.pid)}
            print(f"serve pid {svc.pid}, model registered; mlp-cli built in {extra['build_s']} s; {args.n:,} "
                  f"requests (at most {args.max_seconds:g} s) per run", flush=True)
            for k in range(1, args.repeat + 1):
                run: dict[str, Any] = {"repeat": k}
                shift = (k - 1) % len(SIDES)
                for side in SIDES[shift:] + SIDES[:shift]:  # rotate which goes first
                    if side == "cpp":
                        run[side] = run_cpp(cli, svc.broker, rows_csv, args)
                    else:
                        run[side] = run_python(side, svc.broker if side == "python" else echo_endpoint, rows_json,
                                               args)
                if svc.proc is not None and svc.proc.poll() is not None:
                    raise RuntimeError(f"the serve process died during the run (pid {svc.pid})")
                runs.append(run)
                print(f"repeat {k}/{args.repeat}: p50 cpp {run['cpp']['p50_us']:.0f} us, python "
                      f"{run['python']['p50_us']:.0f} us, echo {run['echo']['p50_us']:.0f} us; service's own p50 "
                      f"{run['cpp']['service_p50_us']:.0f} us", flush=True)
    return report(args, runs, extra, machine)


def report(args: argparse.Namespace, runs: list[dict[str, Any]], extra: dict[str, Any],
           machine: dict[str, Any]) -> int:
    def med(side: str, field: str) -> float:
        return C.median(r[side][field] for r in runs)

    echo_p50, echo_p99 = med("echo", "p50_us"), med("echo", "p99_us")
    labels = {"cpp": "C++ mlp::Client::predict (clients/cpp)", "python": "Python mdp.Client.request predict",
              "echo": "raw REQ/REP echo of the same bodies (reference)"}
    table = [[labels[side], med(side, "p50_us"), med(side, "p99_us"), med(side, "p50_us") / echo_p50,
              med(side, "p99_us") / echo_p99] for side in SIDES]
    print(f"\none client process, one request at a time, one row of {M.N_FEATURES} features; medians of "
          f"{len(runs)} repeats (us)")
    C.print_table(["client", "p50", "p99", "p50 / echo", "p99 / echo"],
                  [[*row[:3], f"{row[3]:.2f}x", f"{row[4]:.2f}x"] for row in table])
    cpp_p50, python_p50 = med("cpp", "p50_us"), med("python", "p50_us")
    service_p50, service_p99 = med("cpp", "service_p50_us"), med("cpp", "service_p99_us")
    print(f"\nthe service's own time per request (latency_us in the replies to the C++ client): p50 "
          f"{service_p50:.1f} us, p99 {service_p99:.1f} us\n")
    verdicts = [
        C.verdict("C++ client: one-row predict over MDP, p50 against the Python client", None,
                  f"C++ {cpp_p50:.0f} us vs Python {python_p50:.0f} us = {cpp_p50 / python_p50:.2f}x; p99 "
                  f"{med('cpp', 'p99_us'):.0f} vs {med('python', 'p99_us'):.0f} us"),
        C.verdict("C++ client: one-row predict over MDP, p50 against a raw REQ/REP echo", None,
                  f"C++ {cpp_p50:.0f} us vs echo {echo_p50:.0f} us = {cpp_p50 / echo_p50:.2f}x; the service's own "
                  f"p50 {service_p50:.0f} us"),
    ]
    params = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    path = C.write_results("bench_cpp_client", {"params": params, "runs": runs, "verdicts": verdicts,
                                                "medians": {"rows": table, "service_p50_us": service_p50,
                                                            "service_p99_us": service_p99}, **extra}, machine)
    print(f"\nresults: {path}")
    return 0


def _roles(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--kind", choices=("python", "echo"))
    parser.add_argument("--endpoint")
    parser.add_argument("--rows-file")
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=1000)
    a = parser.parse_args(argv)
    if a.role == "_rep_server":
        return role_rep_server(a.endpoint, a.lifetime)
    if a.role == "_client":
        return role_client(a.kind, a.endpoint, a.rows_file, a.n, a.duration, a.warmup)
    raise SystemExit(f"unknown role {a.role!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_roles(sys.argv[1:]))
    sys.exit(main())
