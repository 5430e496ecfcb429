#!/usr/bin/env python3
"""Instructions per MDP round trip, counted by callgrind: a measure of issue 15 point 4 that the machine's
load does not move (bench_bus.py gives the timings).

Two counts, each over the measured requests only (callgrind starts with instrumentation off and is switched
on with ``callgrind_control`` after the warm-up, off after the last request):

- *serve*: ``ml-processing serve`` (the generated plugins.toml of bench/_common.py) under callgrind, called
  by a client process running natively: everything the serve process executes per request, its ZeroMQ I/O
  thread included;
- *client*: the client process under callgrind (``mdp.Client``, or ``mdp.AsyncClient`` on uvloop when
  present with ``--kind async``), the serve process native.

With ``--reference`` both counts are made of bench_bus's *raw* reference instead: its pyzmq REP echo process
(the serve side) and a pyzmq REQ client sending the same request bytes (the client side), so the service's
and the clients' counts have their floor beside them.

The client calls ``echo.ping`` N times (default 2,000) after 300 warm-up requests. The serve process also
runs its housekeeping timer (4 wake-ups a second) during the window: a few hundred instructions per request
at most. Needs valgrind (``apt-get install -y valgrind``); a run takes one to two minutes.

    python bench/bench_bus_instructions.py                 # serve and client, mdp.Client
    python bench/bench_bus_instructions.py --side client --kind async
    python bench/bench_bus_instructions.py --reference    # the raw REQ/REP echo, both sides
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

WARMUP = 300


def role_client(kind: str, endpoint: str, n: int, gate: str) -> int:
    """Warm up, wait for ``gate.go``, make `n` requests, write ``gate.done``, wait for ``gate.end``."""
    from ml_processing.bus import codec, mdp

    if kind == "raw":  # bench_bus's reference client: REQ, the request bytes made once, the echo checked
        import zmq

        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.connect(endpoint)
        payload = codec.encode_request("ping", {})

        def run(count: int) -> None:
            for _ in range(count):
                sock.send(payload)
                if sock.recv() != payload:
                    raise RuntimeError("the echo answered something else")
    elif kind == "async":
        import asyncio

        try:  # the loop the serve process and bench_bus's AsyncClient use
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        client: Any = mdp.AsyncClient(endpoint, timeout=30.0)

        async def many(count: int) -> None:
            for _ in range(count):
                await client.request("echo", "ping")

        def run(count: int) -> None:
            loop.run_until_complete(many(count))
    else:
        client = mdp.Client(endpoint, timeout=30.0)

        def run(count: int) -> None:
            for _ in range(count):
                client.request("echo", "ping")

    run(WARMUP)
    Path(gate + ".ready").touch()
    _wait_file(gate + ".go", 600)  # polls with sleeps: a few instructions while waiting
    started = time.perf_counter()
    run(n)
    Path(gate + ".tmp").write_text(repr(time.perf_counter() - started))
    os.replace(gate + ".tmp", gate + ".done")
    _wait_file(gate + ".end", 600)
    if kind == "raw":
        sock.close(0)
    else:
        client.close()
    return 0


def _wait_file(path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.01)


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=120)


def _total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def count(side: str, kind: str, n: int, keep: Path | None = None) -> dict[str, Any]:
    """Instructions per round trip of the `side` process ("serve" or "client"); its callgrind dump is copied
    into `keep` when given. With `kind` "raw" the serve process is bench_bus's REP echo."""
    with tempfile.TemporaryDirectory(prefix="mlp-bench-cg-") as tmp, C.ProcessGroup() as group:
        folder = Path(tmp)
        broker_port, pub_in, pub_out, edge = C.free_ports(4)
        config = folder / "plugins.toml"
        config.write_text(C.PLUGINS_TOML.format(log_level="warning", data_dir=folder / "var", host=C.HOST,
                                                broker=broker_port, pub_in=pub_in, pub_out=pub_out, edge=edge,
                                                uvloop="true"))
        valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={folder}/cg.%p"]
        serve_argv = ([C.PYTHON, str(C.BENCH_DIR / "bench_bus.py"), "_rep_server", "--endpoint",
                       f"tcp://{C.HOST}:{broker_port}"] if kind == "raw"
                      else [C.serve_executable(), "serve", "--config", str(config)])
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
        with open(folder / "serve.log", "wb") as log:
            serve = group.start((valgrind if side == "serve" else []) + serve_argv, cwd=folder, env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if kind != "raw":  # the echo needs no wait: the client's REQ socket connects whenever it binds
            C.wait_http(f"http://{C.HOST}:{edge}/health", 900 if side == "serve" else 60, serve)
        gate = str(folder / "gate")
        client_argv = [C.PYTHON, __file__, "_client", "--kind", kind, "--endpoint", f"tcp://{C.HOST}:{broker_port}",
                       "--n", str(n), "--gate", gate]
        with open(folder / "client.log", "wb") as log:
            client = group.start((valgrind if side == "client" else []) + client_argv, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        measured = serve if side == "serve" else client
        _wait_file(gate + ".ready", 900)
        _control("-i", "on", str(measured.pid))
        Path(gate + ".go").touch()
        _wait_file(gate + ".done", 900)
        _control("-i", "off", str(measured.pid))
        _control("-d", str(measured.pid))
        seconds = float(Path(gate + ".done").read_text())
        Path(gate + ".end").touch()
        client.wait(timeout=300)
        dumps = [p for p in folder.glob(f"cg.{measured.pid}*") if p.stat().st_size > 0]
        total = max(_total(p) for p in dumps)
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            for dump in dumps:
                shutil.copy(dump, keep / f"{side}-{kind}-{dump.name}")
    return {"side": side, "kind": kind, "requests": n, "instructions": total, "per_round_trip": total / n,
            "window_s": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["serve", "client", "both"], default="both")
    parser.add_argument("--kind", choices=["mdp", "async"], default="mdp", help="the client: mdp.Client or AsyncClient")
    parser.add_argument("--reference", action="store_true", help="count the raw REQ/REP echo instead")
    parser.add_argument("--n", type=int, default=2000, help="measured round trips (default 2000)")
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here (for callgrind_annotate)")
    args = parser.parse_args()
    C.exit_on_sigterm()
    kind = "raw" if args.reference else args.kind
    rows = [count(side, kind, args.n, args.keep) for side in (["serve", "client"] if args.side == "both" else [args.side])]
    names = {"mdp": "mdp.Client calling echo.ping", "async": "mdp.AsyncClient calling echo.ping",
             "raw": "the raw REQ/REP echo"}
    for row in rows:
        print(f"{row['side']} process ({names[row['kind']]}): {row['per_round_trip']:,.0f} instructions per round "
              f"trip ({row['instructions']:,} over {row['requests']:,})")
    params = {**vars(args), "keep": str(args.keep) if args.keep else None}
    path = C.write_results("bench_bus_instructions", {"params": params, "rows": rows}, C.machine_info())
    print(f"results: {path}")
    return 0


def _roles(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--kind", default="mdp")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--gate", required=True)
    a = parser.parse_args(argv)
    if a.role == "_client":
        return role_client(a.kind, a.endpoint, a.n, a.gate)
    raise SystemExit(f"unknown role {a.role!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_roles(sys.argv[1:]))
    sys.exit(main())
