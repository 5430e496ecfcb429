#!/usr/bin/env python3
"""The cost of authentication: one-row predictions with CURVE and bearer tokens against the same without.

Issue 12 point 7. Target: the authenticated p50 within 1.15x of the unauthenticated p50, over MDP and over
REST alike.

Two ``ml-processing serve`` processes on free ports, each with bench_models' xgboost classifier (200 trees,
depth 6, 16 features) registered over REST and the prediction cache off (every request computed):

- *plain*: ``[security] auth`` off (the default);
- *auth*: ``[security] auth = true``; before it starts, its data dir gets (with `core.security`'s
  ``TokenStore`` and ``KeyRing``, what ``ml-processing tokens add`` / ``keys client`` do) an admin token (to
  register the model), a compute token and a compute client key pair (the measured clients).

Each measurement is one client process, one request at a time, cycling through 256 rows:

- MDP: ``models.predict`` with the blocking ``mdp.Client``, with ``keys=CurveKeys(...)`` against *auth*, without
  against *plain*. Like REST below: one client process holds a client of each service and interleaves
  them request by request;
- REST: ``POST /api/v1/predict`` on keep-alive ``http.client`` connections, with ``Authorization: Bearer``
  against *auth*, without against *plain*. One client process holds one connection to each service and
  interleaves them request by request (plain then auth, then auth then plain, ...), so both sides see the
  same moments of a shared machine: two runs one after the other on a busy machine differ by more than
  the 15 % asked here even when both services are the same (plain against plain: 0.46x to 2.9x under load,
  interleaved 0.88x to 1.07x). The median of the paired differences (auth minus plain, request by
  request) is reported too.

Plain and authenticated alternate within each repeat; the table quotes medians of the repeats; ratios are
authenticated / plain.

    python bench/bench_security.py            # 3 repeats, up to 20,000 requests (20 s) per run
    python bench/bench_security.py --quick    # 1 repeat, 2,000 requests per run: checks the script works
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_models as M

TARGET_RATIO = 1.15  # authenticated p50 / plain p50
PLAIN_TOML = """
[cache]
prediction_cache_ttl = 0.0

[plugins.models]
defaults = false
"""
AUTH_TOML = PLAIN_TOML + """
[security]
auth = true
"""

# -- the measured client, in its own process ----------------------------------------------------------


def role_client(transport: str, target: str, rows_file: str, n: int, duration: float, warmup: int,
                credentials: str | None) -> int:
    """One client, one request at a time: `warmup` requests, then up to `n` or `duration` s, timed each."""
    rows = json.loads(Path(rows_file).read_text())
    secret = json.loads(Path(credentials).read_text()) if credentials else None
    if transport == "mdp":
        from ml_processing.bus import mdp

        keys = mdp.CurveKeys(**secret) if secret else None
        client = mdp.Client(target, timeout=5.0, keys=keys)

        def call(row: list[float]) -> Any:
            return client.request("models", "predict", {"model": M.MODEL_ID, "features": row})

        close = client.close
    elif transport == "rest":
        call, close = rest_caller(target, rows, secret["token"] if secret else None)
    else:
        raise SystemExit(f"unknown transport {transport!r}")
    nrows = len(rows)
    perf = time.perf_counter_ns
    try:
        first = call(rows[0])
        if M.positive_probability(first) is None:
            raise RuntimeError(f"the reply has no probabilities: {first!r}")
        for i in range(warmup):
            call(rows[i % nrows])
        samples = []
        end = time.monotonic() + duration
        for i in range(n):
            if (i & 63) == 0 and time.monotonic() > end:
                break
            row = rows[i % nrows]
            s = perf()
            call(row)
            samples.append(perf() - s)
    finally:
        close()
    print(json.dumps({"transport": transport, "count": len(samples), "samples_ns": samples}))
    return 0


def rest_caller(target: str, rows: list[list[float]], token: str | None) -> tuple[Any, Any]:
    """``call(row)`` (one predict on a keep-alive connection, the reply decoded) and ``close()``."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(target)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    bodies = [json.dumps({"model": M.MODEL_ID, "features": r}, separators=(",", ":")).encode() for r in rows]
    by_row = {id(r): b for r, b in zip(rows, bodies, strict=True)}

    def call(row: list[float]) -> Any:
        conn.request("POST", parts.path, by_row[id(row)], headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{target} answered {resp.status}: {data[:300]!r}")
        return json.loads(data)

    return call, conn.close


def role_rest_pair(plain: str, auth: str, rows_file: str, n: int, duration: float, warmup: int,
                   credentials: str) -> int:
    """One client, two connections (plain and auth), interleaved request by request; each side timed."""
    rows = json.loads(Path(rows_file).read_text())
    token = json.loads(Path(credentials).read_text())["token"]
    sides = {"plain": rest_caller(plain, rows, None), "auth": rest_caller(auth, rows, token)}
    nrows = len(rows)
    samples: dict[str, list[int]] = {"plain": [], "auth": []}
    try:
        for side, (call, _) in sides.items():
            if M.positive_probability(call(rows[0])) is None:
                raise RuntimeError(f"the {side} reply has no probabilities")
        for i in range(warmup):
            for call, _ in sides.values():
                call(rows[i % nrows])
        end = time.monotonic() + duration
        perf = time.perf_counter_ns
        for i in range(n):
            if (i & 63) == 0 and time.monotonic() > end:
                break
            row = rows[i % nrows]
            for side in (("plain", "auth") if i & 1 else ("auth", "plain")):
                call = sides[side][0]
                s = perf()
                call(row)
                samples[side].append(perf() - s)
    finally:
        for _, close in sides.values():
            close()
    print(json.dumps({"transport": "rest", "count": len(samples["plain"]), "plain_ns": samples["plain"],
                      "auth_ns": samples["auth"]}))
    return 0


def role_mdp_pair(plain: str, auth: str, rows_file: str, n: int, duration: float, warmup: int,
                  credentials: str) -> int:
    """One client, an `mdp.Client` of each service (with the CURVE keys for auth), interleaved request by
    request; each side timed."""
    from ml_processing.bus import mdp

    rows = json.loads(Path(rows_file).read_text())
    keys = mdp.CurveKeys(**json.loads(Path(credentials).read_text()))
    clients = {"plain": mdp.Client(plain, timeout=5.0), "auth": mdp.Client(auth, timeout=5.0, keys=keys)}
    nrows = len(rows)
    samples: dict[str, list[int]] = {"plain": [], "auth": []}

    def call(side: str, row: list[float]) -> Any:
        return clients[side].request("models", "predict", {"model": M.MODEL_ID, "features": row})

    try:
        for side in clients:
            if M.positive_probability(call(side, rows[0])) is None:
                raise RuntimeError(f"the {side} reply has no probabilities")
        for i in range(warmup):
            for side in clients:
                call(side, rows[i % nrows])
        end = time.monotonic() + duration
        perf = time.perf_counter_ns
        for i in range(n):
            if (i & 63) == 0 and time.monotonic() > end:
                break
            row = rows[i % nrows]
            for side in (("plain", "auth") if i & 1 else ("auth", "plain")):
                s = perf()
                call(side, row)
                samples[side].append(perf() - s)
    finally:
        for client in clients.values():
            client.close()
    C.emit_json({"transport": "mdp", "count": len(samples["plain"]), "plain_ns": samples["plain"],
                 "auth_ns": samples["auth"]})
    return 0


# -- the orchestrating side ---------------------------------------------------------------------------


def provision(svc: C.Service, work: Path) -> dict[str, Path]:
    """Before *auth* starts: an admin token, a compute token and a compute client key in its data dir."""
    from ml_processing.core.security.keys import KeyRing
    from ml_processing.core.security.tokens import TokenStore

    folder = svc.dir / "var" / "security"  # [service] data_dir of the generated plugins.toml, default directory
    store, ring = TokenStore(folder / "tokens.json"), KeyRing(folder)
    server, _ = ring.server()
    public, secret = ring.add_client("bench-compute", ["compute"])
    files = {"admin": work / "admin.json", "rest": work / "token.json", "mdp": work / "curve.json"}
    files["admin"].write_text(json.dumps({"token": store.add("bench-admin", ["admin", "read"])}))
    files["rest"].write_text(json.dumps({"token": store.add("bench-compute", ["compute"])}))
    files["mdp"].write_text(json.dumps({"server": server, "public": public, "secret": secret}))
    for path in files.values():
        path.chmod(0o600)
    return files


def register(svc: C.Service, model_path: Path, admin: Path | None) -> None:
    """bench_models' registration, with the admin token when the service asks for one; waits until loaded."""
    import base64

    body = {"kind": "xgboost", "format": "ubj", "artifact": base64.b64encode(model_path.read_bytes()).decode(),
            "features": M.FEATURE_NAMES, "promote": True}
    headers = {"Content-Type": "application/json"}
    if admin is not None:
        headers["Authorization"] = f"Bearer {json.loads(admin.read_text())['token']}"
    req = urllib.request.Request(f"{svc.edge_url}/api/v1/models/{M.MODEL_ID}/versions",
                                 data=json.dumps(body).encode(), method="POST", headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()
    deadline = time.monotonic() + 60
    probe = urllib.request.Request(f"{svc.edge_url}/api/v1/predict", method="POST", headers=headers,
                                   data=json.dumps({"model": M.MODEL_ID, "features": [0.0] * M.N_FEATURES}).encode())
    while True:  # the model answers (the same request for both services, whatever /health shows)
        try:
            with urllib.request.urlopen(probe, timeout=10) as resp:
                resp.read()
                return
        except urllib.error.HTTPError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{svc.edge_url}: the model does not answer: {exc.code} {exc.read()[:300]!r}") from None
        time.sleep(0.2)


def refuses_without_token(svc: C.Service) -> int:
    """The status *auth* answers a predict without a token (401 expected: authentication is really on)."""
    req = urllib.request.Request(f"{svc.edge_url}/api/v1/predict", method="POST",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"model": M.MODEL_ID, "features": [0.0] * M.N_FEATURES}).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status != 401:
        raise RuntimeError(f"the auth service answered {status} to a predict without a token, not 401")
    return status


def run_client(transport: str, target: str, rows_file: Path, credentials: Path | None,
               args: argparse.Namespace) -> dict[str, Any]:
    argv = [C.PYTHON, __file__, "_client", "--transport", transport, "--target", target, "--rows-file",
            str(rows_file), "--n", str(args.n), "--duration", str(args.max_seconds), "--warmup", str(args.warmup)]
    if credentials is not None:
        argv += ["--credentials", str(credentials)]
    result = C.run_json(argv, timeout=args.max_seconds + 120)
    return {"count": result["count"], **C.summarize_ns(result["samples_ns"])}


def run_rest_pair(plain: C.Service, auth: C.Service, rows_file: Path, credentials: Path,
                  args: argparse.Namespace) -> dict[str, Any]:
    """The interleaved REST client: each side's summary and the median paired difference (auth - plain)."""
    path = "/api/v1/predict"
    argv = [C.PYTHON, __file__, "_rest_pair", "--target", plain.edge_url + path, "--auth-target",
            auth.edge_url + path, "--rows-file", str(rows_file), "--credentials", str(credentials),
            "--n", str(args.n), "--duration", str(args.max_seconds), "--warmup", str(args.warmup)]
    result = C.run_json(argv, timeout=2 * args.max_seconds + 120)
    diffs = [a - p for a, p in zip(result["auth_ns"], result["plain_ns"], strict=True)]
    return {"rest_plain": {"count": result["count"], **C.summarize_ns(result["plain_ns"])},
            "rest_auth": {"count": result["count"], **C.summarize_ns(result["auth_ns"])},
            "rest_paired_diff_us": C.median(diffs) / 1000 if diffs else float("nan")}


def run_mdp_pair(plain: C.Service, auth: C.Service, rows_file: Path, credentials: Path,
                 args: argparse.Namespace) -> dict[str, Any]:
    """The interleaved MDP client: each side's summary and the median paired difference (auth - plain)."""
    argv = [C.PYTHON, __file__, "_mdp_pair", "--target", plain.broker, "--auth-target", auth.broker,
            "--rows-file", str(rows_file), "--credentials", str(credentials), "--n", str(args.n),
            "--duration", str(args.max_seconds), "--warmup", str(args.warmup)]
    result = C.run_json(argv, timeout=2 * args.max_seconds + 120)
    diffs = [a - p for a, p in zip(result["auth_ns"], result["plain_ns"], strict=True)]
    return {"mdp_plain": {"count": result["count"], **C.summarize_ns(result["plain_ns"])},
            "mdp_auth": {"count": result["count"], **C.summarize_ns(result["auth_ns"])},
            "mdp_paired_diff_us": C.median(diffs) / 1000 if diffs else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the table quotes medians (default 3)")
    parser.add_argument("--n", type=int, default=20_000, help="requests per run (default 20000)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time bound of a run (default 20)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up requests per run (default 1000)")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds for serve to answer /health")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 2,000 requests (5 s), 200 warm-up")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.n, args.max_seconds, args.warmup = 1, 2_000, 5.0, 200
    if args.repeat < 1 or args.n < 1:
        parser.error("--repeat and --n must be positive")
    C.exit_on_sigterm()
    machine = C.machine_info()
    runs: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mlp-bench-security-") as tmp:
        work = Path(tmp)
        model_path = work / f"{M.MODEL_ID}.ubj"
        extra["model"] = M.train_model(model_path)
        rows_file = work / "rows.json"
        rows_file.write_text(json.dumps(M.make_rows(M.CYCLE_ROWS, seed=11)))
        plain = C.Service(start_timeout=args.start_timeout, extra_toml=PLAIN_TOML)
        auth = C.Service(start_timeout=args.start_timeout, extra_toml=AUTH_TOML)
        creds = provision(auth, work)
        with plain, auth:
            register(plain, model_path, None)
            register(auth, model_path, creds["admin"])
            extra["auth_refuses_without_token"] = refuses_without_token(auth)
            extra["services"] = {side: {"pid": svc.pid, "edge": svc.edge_url, "broker": svc.broker,
                                        "uvloop": C.uses_uvloop(svc.pid)} for side, svc in (("plain", plain),
                                                                                             ("auth", auth))}
            print(f"plain serve pid {plain.pid}, auth serve pid {auth.pid}; model registered on both; "
                  f"{args.n:,} requests (at most {args.max_seconds:g} s) per run", flush=True)
            for k in range(1, args.repeat + 1):
                run: dict[str, Any] = {"repeat": k}
                run.update(run_mdp_pair(plain, auth, rows_file, creds["mdp"], args))
                run.update(run_rest_pair(plain, auth, rows_file, creds["rest"], args))
                dead = [s.pid for s in (plain, auth) if s.proc is not None and s.proc.poll() is not None]
                if dead:
                    raise RuntimeError(f"a serve process died during the run (pids {dead})")
                runs.append(run)
                print(f"repeat {k}/{args.repeat}: MDP p50 plain {run['mdp_plain']['p50_us']:.0f} us, CURVE "
                      f"{run['mdp_auth']['p50_us']:.0f} us (paired difference {run['mdp_paired_diff_us']:+.0f} us); REST p50 plain {run['rest_plain']['p50_us']:.0f} us, "
                      f"bearer {run['rest_auth']['p50_us']:.0f} us (paired difference "
                      f"{run['rest_paired_diff_us']:+.0f} us)", flush=True)
    return report(args, runs, extra, machine)


def report(args: argparse.Namespace, runs: list[dict[str, Any]], extra: dict[str, Any],
           machine: dict[str, Any]) -> int:
    def med(key: str, field: str) -> float:
        return C.median(r[key][field] for r in runs)

    labels = {"mdp": "one row over MDP (us): CURVE vs plain", "rest": "one row over REST (us): bearer vs plain"}
    rows = [[labels[t], med(f"{t}_plain", "p50_us"), med(f"{t}_plain", "p99_us"), med(f"{t}_auth", "p50_us"),
             med(f"{t}_auth", "p99_us"), med(f"{t}_auth", "p50_us") / med(f"{t}_plain", "p50_us"),
             med(f"{t}_auth", "p99_us") / med(f"{t}_plain", "p99_us")] for t in ("mdp", "rest")]
    print(f"\none client process, one request at a time; medians of {len(runs)} repeats")
    C.print_table(["test", "plain p50", "plain p99", "auth p50", "auth p99", "p50 ratio", "p99 ratio"],
                  [[*r[:5], f"{r[5]:.3f}x", f"{r[6]:.3f}x"] for r in rows])
    print()
    verdicts = [
        C.verdict(f"security: one row over MDP with CURVE, p50 within {TARGET_RATIO}x of plain",
                  rows[0][5] <= TARGET_RATIO,
                  f"CURVE {rows[0][3]:.0f} us vs plain {rows[0][1]:.0f} us = {rows[0][5]:.3f}x; p99 {rows[0][4]:.0f} "
                  f"vs {rows[0][2]:.0f} us; interleaved, median paired difference "
                  f"{C.median(r['mdp_paired_diff_us'] for r in runs):+.0f} us"),
        C.verdict(f"security: one row over REST with a bearer token, p50 within {TARGET_RATIO}x of plain",
                  rows[1][5] <= TARGET_RATIO,
                  f"bearer {rows[1][3]:.0f} us vs plain {rows[1][1]:.0f} us = {rows[1][5]:.3f}x; p99 {rows[1][4]:.0f} "
                  f"vs {rows[1][2]:.0f} us; interleaved, median paired difference "
                  f"{C.median(r['rest_paired_diff_us'] for r in runs):+.0f} us"),
    ]
    path = C.write_results("bench_security", {"params": vars(args), "runs": runs, "verdicts": verdicts,
                                              "medians": {"rows": rows}, **extra}, machine)
    print(f"\nresults: {path}")
    return 0


def _roles(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--transport", choices=("mdp", "rest"))
    parser.add_argument("--target")
    parser.add_argument("--auth-target")
    parser.add_argument("--rows-file")
    parser.add_argument("--credentials")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=1000)
    a = parser.parse_args(argv)
    if a.role == "_client":
        return role_client(a.transport, a.target, a.rows_file, a.n, a.duration, a.warmup, a.credentials)
    if a.role == "_mdp_pair":
        return role_mdp_pair(a.target, a.auth_target, a.rows_file, a.n, a.duration, a.warmup, a.credentials)
    if a.role == "_rest_pair":
        return role_rest_pair(a.target, a.auth_target, a.rows_file, a.n, a.duration, a.warmup, a.credentials)
    raise SystemExit(f"unknown role {a.role!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_roles(sys.argv[1:]))
    sys.exit(main())
