#!/usr/bin/env python3
"""Model serving: one-row and batch predictions of an xgboost model over ZeroMQ and REST, model load, memory.

The model: an xgboost binary classifier (200 trees, max_depth 6, 16 features), trained at the start of the run
on 20,000 seeded rows (``tree_method="hist"``, one thread, fixed seed) and saved as UBJ into a temp dir. Ours
and every reference serve that same file. Ours: ``ml-processing serve`` (generated plugins.toml, prediction
cache off so every request is computed) with the model registered through ``POST
/api/v1/models/bench/versions`` (base64 artifact, promoted). Requests cycle through 256 fixed rows.

1. One row over ZeroMQ, p50/p99. Ours: a client process calling ``models.predict`` with the blocking
   ``mdp.Client`` over tcp. Reference: a bare pyzmq REP process (msgpack decode, ``booster.inplace_predict`` on
   a float32 row with nthread=1, msgpack encode), driven by a REQ client process sending the same rows.
   Target: ours p50 <= 0.5x the reference p50.
2. One row over REST, ``wrk -t1 -c4 -d10s --latency`` after a 2 s warm-up (a Lua script POSTs the JSON bodies
   and prints wrk's latency percentiles as JSON). Ours: ``POST /api/v1/predict``. References: (a) a bare
   aiohttp app on uvloop (orjson parse, inplace_predict, orjson reply) in its own process; (b) MLServer 1.7
   with mlserver-xgboost serving the same file (installed on first use into ``bench/.venvs/mlserver``;
   ``parallel_workers: 0``, no metrics endpoint, no gzip, debug off, ``OMP_NUM_THREADS=1``), driven with V2
   inference requests on ``/v2/models/bench/infer``. Targets: ours p50 < 300 us; ours req/s >= 4x MLServer's.
3. A batch of 1,000 rows over REST: a client process with one keep-alive connection (http.client) POSTing the
   same body N times; p50. Ours: ``POST /api/v1/predict/batch``; reference: the bare aiohttp app. Target: ours
   p50 < 15 ms.
4. Throughput: 4 client processes, each a blocking loop, started together on a time barrier, time-bounded.
   Ours: ``models.predict`` with ``mdp.Client``; reference: 4 REQ processes against the bare REP server.
   Target: ours >= 8,000 predictions/s.
5. Model load and memory: the serve process is stopped and started again on the same data dir; the
   ``load_ms`` that ``/health/models`` reports for the registered model (target < 500 ms), and VmRSS of the
   serve process 2 s later, with its default models and ours loaded (target < 512 MB). References: loading
   the file with ``xgboost.Booster`` plus one prediction in a fresh process; VmRSS of the bare aiohttp +
   xgboost reference process and of MLServer.

Every client runs in its own process, every load loop is bounded in count and time, everything is on
127.0.0.1. Reference and ours alternate within each repeat; the tables quote medians of the repeats, and
every repeat is kept in bench/results/bench_models.json. If MLServer cannot be installed, its numbers are
reported as not measured and the rest runs.

    python bench/bench_models.py                   # 3 repeats
    python bench/bench_models.py --no-mlserver     # without the MLServer reference
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import bench_rest as R

TARGET_ZMQ_RATIO = 0.5  # 1. our ZeroMQ p50 at most half the bare REP + xgboost p50
TARGET_REST_P50_US = 300.0  # 2. REST one row p50
TARGET_VS_MLSERVER = 4.0  # 2. REST one row req/s at least 4x MLServer's
TARGET_BATCH_MS = 15.0  # 3. 1,000 rows over REST, p50
TARGET_TPUT = 8_000.0  # 4. predictions/s with 4 ZeroMQ client processes
TARGET_LOAD_MS = 500.0  # 5. load_ms of the registered model after a restart
TARGET_RSS_MB = 512.0  # 5. VmRSS of the serve process with its models loaded

MODEL_ID = "bench"
N_FEATURES = 16
N_TREES = 200
MAX_DEPTH = 6
TRAIN_ROWS = 20_000
CYCLE_ROWS = 256  # distinct rows the one-row clients cycle through
WRK_ROWS = 64  # distinct bodies in the wrk Lua script
BATCH_ROWS = 1_000
FEATURE_NAMES = [f"f{i}" for i in range(N_FEATURES)]

MLSERVER_VENV = C.BENCH_DIR / ".venvs" / "mlserver"
#: uvicorn (MLServer's HTTP server) uses uvloop and httptools when they are installed (``uvicorn[standard]``);
#: MLServer's own requirements pull neither httptools nor a uvloop that fits, so they are named here.
MLSERVER_PACKAGES = ["mlserver==1.7.*", "mlserver-xgboost==1.7.*", "uvloop<0.22", "httptools"]
#: The cache of computed predictions is switched off, so that ours computes every request like the references.
EXTRA_TOML = """
[cache]
prediction_cache_ttl = 0.0
"""

# -- the model and the rows -------------------------------------------------------------------------------


def train_model(path: Path) -> dict[str, Any]:
    """Train the benchmark classifier deterministically and save it as UBJ; returns what was made."""
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(7)
    x = rng.normal(size=(TRAIN_ROWS, N_FEATURES)).astype(np.float32)
    w = rng.normal(size=N_FEATURES)
    logit = x @ w + np.sin(x[:, 0] * x[:, 1]) + 0.5 * x[:, 2] * x[:, 3]
    y = (logit + rng.logistic(size=TRAIN_ROWS) > 0).astype(np.float32)
    params = {"objective": "binary:logistic", "max_depth": MAX_DEPTH, "eta": 0.1, "tree_method": "hist",
              "nthread": 1, "seed": 7, "eval_metric": "logloss"}
    t0 = time.perf_counter()
    booster = xgb.train(params, xgb.DMatrix(x, label=y, nthread=1), num_boost_round=N_TREES)
    train_s = time.perf_counter() - t0
    booster.save_model(str(path))
    if booster.num_boosted_rounds() != N_TREES or booster.num_features() != N_FEATURES:
        raise RuntimeError("the benchmark model does not have the expected shape")
    return {"path": str(path), "bytes": path.stat().st_size, "trees": N_TREES, "max_depth": MAX_DEPTH,
            "features": N_FEATURES, "train_rows": TRAIN_ROWS, "train_s": round(train_s, 2),
            "xgboost": xgb.__version__}


def make_rows(n: int, seed: int) -> list[list[float]]:
    """`n` rows of 16 features, rounded to 6 decimals (short JSON, exact in every encoding)."""
    import numpy as np

    return np.round(np.random.default_rng(seed).normal(size=(n, N_FEATURES)), 6).tolist()


def local_probabilities(model_path: Path, rows: list[list[float]]) -> list[float]:
    import numpy as np
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(model_path))
    booster.set_param({"nthread": 1})
    return [float(p) for p in booster.inplace_predict(np.asarray(rows, dtype=np.float32))]


def positive_probability(reply: Any) -> float | None:
    """P(class 1) from a one-row reply of ours or of a reference (``probabilities`` as [p0, p1] or a dict)."""
    if not isinstance(reply, dict):
        return None
    probs = reply.get("probabilities")
    if isinstance(probs, list) and probs and isinstance(probs[0], list):
        probs = probs[0]
    if isinstance(probs, list) and len(probs) == 2 and all(isinstance(p, (int, float)) for p in probs):
        return float(probs[1])
    if isinstance(probs, dict):
        for key in ("1", 1, "1.0", "true", "True"):
            if key in probs:
                return float(probs[key])
    if isinstance(reply.get("outputs"), list):  # V2 inference response (MLServer)
        data = reply["outputs"][0].get("data") or []
        return float(data[-1]) if data else None
    return None


# -- roles run in child processes ---------------------------------------------------------------------


def _booster(model_path: str) -> Any:
    import xgboost as xgb

    booster = xgb.Booster(model_file=model_path)
    booster.set_param({"nthread": 1})
    return booster


def _predict_row(booster: Any, row: list[float]) -> dict[str, Any]:
    import numpy as np

    p = float(booster.inplace_predict(np.asarray([row], dtype=np.float32))[0])
    return {"model": MODEL_ID, "prediction": int(p >= 0.5), "probabilities": [1.0 - p, p]}


def _predict_rows(booster: Any, rows: list[list[float]]) -> dict[str, Any]:
    import numpy as np

    p = booster.inplace_predict(np.asarray(rows, dtype=np.float32))
    return {"model": MODEL_ID, "predictions": (p >= 0.5).astype(np.int8).tolist(),
            "probabilities": np.stack([1.0 - p, p], axis=1).tolist()}


def role_rep_server(endpoint: str, model_path: str, lifetime: float) -> int:
    """Reference for 1 and 4: REP, msgpack in, ``inplace_predict`` on one row, msgpack out."""
    import msgpack

    booster = _booster(model_path)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    return C.serve_rep(endpoint, lifetime, lambda msg: packb(_predict_row(booster, unpackb(msg)["features"])))


def role_ref_http(port: int, model_path: str, lifetime: float) -> int:
    """Reference for 2 and 3: aiohttp on uvloop, orjson in and out, ``inplace_predict`` in the handler."""
    import asyncio

    import orjson
    import uvloop
    from aiohttp import web

    booster = _booster(model_path)

    def dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()

    async def predict(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        return web.json_response(_predict_row(booster, body["features"]), dumps=dumps)

    async def predict_batch(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        return web.json_response(_predict_rows(booster, body["rows"]), dumps=dumps)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def main() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/predict", predict)
        app.router.add_post("/predict/batch", predict_batch)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, C.HOST, port).start()
        try:
            await asyncio.sleep(lifetime)  # the parent stops it long before; this only bounds an orphan
        finally:
            await runner.cleanup()

    uvloop.run(main())
    return 0


def role_load_ref(model_path: str) -> int:
    """Reference for 5: load the file with xgboost and make one prediction, in a fresh process."""
    import numpy as np
    import xgboost as xgb

    t0 = time.perf_counter()
    booster = xgb.Booster(model_file=model_path)
    booster.set_param({"nthread": 1})
    booster.inplace_predict(np.zeros((1, N_FEATURES), dtype=np.float32))
    load_ms = (time.perf_counter() - t0) * 1000
    print(json.dumps({"load_ms": load_ms, "rss_kib": C.rss_kib(os.getpid())}))
    return 0


def role_client(kind: str, endpoint: str, rows_file: str, n: int, duration: float, warmup: int,
                start_at: float) -> int:
    """One blocking client: warm-up, wait for the barrier, then up to `n` predictions or `duration` s."""
    import zmq

    rows = json.loads(Path(rows_file).read_text())
    nrows = len(rows)
    perf = time.perf_counter_ns
    if kind == "raw":
        import msgpack

        packb, unpackb = msgpack.packb, msgpack.unpackb
        ctx = zmq.Context()
        sock = ctx.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)  # a lost reply fails the run instead of hanging it
        sock.connect(endpoint)

        def call(row: list[float]) -> Any:
            sock.send(packb({"model": MODEL_ID, "features": row}))
            return unpackb(sock.recv())

        def close() -> None:
            sock.close(0)
            ctx.term()
    elif kind == "mdp":
        from ml_processing.bus import mdp

        client = mdp.Client(endpoint, timeout=5.0)

        def call(row: list[float]) -> Any:
            return client.request("models", "predict", {"model": MODEL_ID, "features": row})

        close = client.close
    else:
        raise SystemExit(f"unknown client kind {kind!r}")

    try:
        first = call(rows[0])
        if positive_probability(first) is None:
            raise RuntimeError(f"the reply has no probabilities: {first!r}")
        for i in range(warmup):
            call(rows[i % nrows])
        on_time = C.wait_until(start_at)
        samples = []
        append = samples.append
        t0 = time.time()
        end = time.monotonic() + duration
        check = time.monotonic
        for i in range(n):
            if (i & 63) == 0 and check() > end:
                break
            row = rows[i % nrows]
            s = perf()
            call(row)
            append(perf() - s)
        t1 = time.time()
    finally:
        close()
    print(json.dumps({"kind": kind, "count": len(samples), "t0": t0, "t1": t1, "on_time": on_time,
                      "first_reply": {k: v for k, v in first.items() if k != "probabilities"},
                      "samples_ns": samples}, default=str))
    return 0


def role_http_client(url: str, body_file: str, n: int, duration: float, warmup: int) -> int:
    """Batch client: one keep-alive connection, POST the same body up to `n` times or `duration` s."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    body = Path(body_file).read_bytes()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}

    def call() -> bytes:
        conn.request("POST", parts.path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}: {data[:500]!r}")
        return data

    try:
        first = json.loads(call())
        rows_back = max((len(v) for v in first.values() if isinstance(v, list)), default=0)
        if rows_back != BATCH_ROWS:
            raise RuntimeError(f"{url}: no list of {BATCH_ROWS} results in the reply (keys {sorted(first)})")
        for _ in range(warmup):
            call()
        samples = []
        end = time.monotonic() + duration
        perf = time.perf_counter_ns
        for _ in range(n):
            if time.monotonic() > end:
                break
            s = perf()
            call()
            samples.append(perf() - s)
    finally:
        conn.close()
    print(json.dumps({"count": len(samples), "reply_keys": sorted(first), "samples_ns": samples}))
    return 0


# -- the orchestrating side ---------------------------------------------------------------------------


def run_clients(kind: str, endpoint: str, rows_file: Path, args: argparse.Namespace, *, clients: int, n: int,
                duration: float) -> dict[str, Any]:
    """Start `clients` ZeroMQ client processes on one barrier; aggregate their samples and throughput."""
    start_at = time.time() + args.startup + 0.2 * clients
    timeout = args.startup + 0.2 * clients + duration + 60
    argv = [C.PYTHON, __file__, "_client", "--kind", kind, "--endpoint", endpoint, "--rows-file", str(rows_file),
            "--n", str(n), "--duration", str(duration), "--warmup", str(args.warmup), "--start-at", repr(start_at)]
    with C.ProcessGroup() as group:
        procs = [group.start(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(clients)]
        results = C.collect(procs, timeout, group)
    samples = [s for r in results for s in r["samples_ns"]]
    total = sum(r["count"] for r in results)
    window = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return {"kind": kind, "clients": clients, "requests": total, "window_s": window,
            "rps": total / window if window > 0 else float("nan"),
            "late_clients": sum(1 for r in results if not r["on_time"]), "first_reply": results[0]["first_reply"],
            **C.summarize_ns(samples)}


def run_batch(url: str, body_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    argv = [C.PYTHON, __file__, "_http_client", "--url", url, "--body-file", str(body_file),
            "--n", str(args.batch_n), "--duration", str(args.max_seconds), "--warmup", str(args.batch_warmup)]
    result = C.run_json(argv, timeout=args.max_seconds + 120)
    samples = result.pop("samples_ns")
    return {"url": url, **result, **C.summarize_ns(samples)}


def wrk_script(path: Path, bodies: list[str]) -> Path:
    """bench_rest's Lua (JSON latency summary in ``done``) with requests pre-formatted from `bodies`, in turn."""
    quoted = ",\n".join(f"  '{b}'" for b in bodies)  # JSON bodies of numbers: no quote or backslash to escape
    setup = ("local bodies = {\n" + quoted + "\n}\nlocal prepared = {}\nlocal turn = 0\n"
             "init = function(args)\n"
             "  for k, body in ipairs(bodies) do\n"
             '    prepared[k] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)\n'
             "  end\nend\n"
             "request = function()\n  turn = turn % #prepared + 1\n  return prepared[turn]\nend\n")
    path.write_text(R.LUA.format(setup=setup).replace("bench_rest.py", "bench_models.py", 1))
    return path


def wrk(url: str, script: Path, args: argparse.Namespace, seconds: float | None = None,
        connections: int | None = None) -> dict[str, Any]:
    return R.run_wrk(url, script, seconds=seconds or args.seconds, threads=args.threads,
                     connections=connections or args.connections)


def post_json(url: str, body: Any, timeout: float = 10.0) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:1000]!r}") from None


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


# -- MLServer 1.7 (reference for 2) ------------------------------------------------------------------------


def ensure_mlserver(venv: Path, timeout: float) -> tuple[Path | None, str]:
    """MLServer 1.7 + mlserver-xgboost in their own venv, installed on first use.

    Returns the ``mlserver`` executable (None if it could not be installed) and its versions or the reason.
    """
    exe, py = venv / "bin" / "mlserver", venv / "bin" / "python"
    dists = ("mlserver", "mlserver-xgboost", "xgboost", "uvloop", "httptools")
    probe = [str(py), "-c", "import importlib.metadata as m, mlserver, mlserver_xgboost, httptools, uvloop; "
             f"print(', '.join(f'{{d}} {{m.version(d)}}' for d in {dists!r}))"]

    def versions() -> str | None:
        if not exe.exists():
            return None
        done = subprocess.run(probe, capture_output=True, text=True, timeout=120)
        return done.stdout.strip() if done.returncode == 0 else None

    found = versions()
    if found:
        return exe, found
    log_path = venv.parent / "mlserver-install.log"
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing {' '.join(MLSERVER_PACKAGES)} into {venv} (first use; log: {log_path}) ...", flush=True)
    steps = [] if py.exists() else [[C.PYTHON, "-m", "venv", str(venv)]]
    steps.append([str(py), "-m", "pip", "install", "--disable-pip-version-check", *MLSERVER_PACKAGES])
    t0 = time.monotonic()
    with open(log_path, "w") as log, C.ProcessGroup() as group:
        for argv in steps:
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            proc = group.start(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                code = proc.wait(max(1.0, timeout - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                group.stop(proc, timeout=5)
                return None, f"install timed out after {timeout:.0f}s (log: {log_path})"
            if code != 0:
                lines = log_path.read_text(errors="replace").strip().splitlines()
                tail = [line for line in lines if not line.startswith("WARNING")][-2:]
                return None, f"`{' '.join(argv[:4])} ...` exited {code}: {' | '.join(tail)} (log: {log_path})"
    found = versions()
    if not found:
        return None, f"installed, but mlserver/mlserver_xgboost do not import (log: {log_path})"
    print(f"installed {found} in {time.monotonic() - t0:.0f}s", flush=True)
    return exe, found


def start_mlserver(group: C.ProcessGroup, exe: Path, model_path: Path, workdir: Path,
                   timeout: float) -> tuple[subprocess.Popen[Any], str]:
    """MLServer with the settings its docs give for low latency, serving `model_path` as model ``bench``."""
    http_port, grpc_port, metrics_port = C.free_ports(3)
    root = workdir / "mlserver"
    (root / MODEL_ID).mkdir(parents=True, exist_ok=True)
    settings = {
        "host": C.HOST, "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
        "parallel_workers": 0,  # inference in the server process itself: no IPC hop to a worker pool
        "metrics_endpoint": None,  # no Prometheus middleware or metrics server
        "gzip_enabled": False, "debug": False, "load_models_at_startup": True,
        "model_repository_root": str(root),
    }
    model_settings = {"name": MODEL_ID, "implementation": "mlserver_xgboost.XGBoostModel",
                      "parameters": {"uri": str(model_path), "version": "v1"}}
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    (root / MODEL_ID / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVER")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(workdir / "mlserver.log", "wb")
    try:
        proc = group.start([str(exe), "start", str(root)], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
    finally:
        log.close()
    url = f"http://{C.HOST}:{http_port}"
    try:
        C.wait_http(url + "/v2/health/ready", timeout, proc)
    except RuntimeError:
        tail = (workdir / "mlserver.log").read_text(errors="replace")[-2000:]
        group.stop(proc)
        raise RuntimeError(f"MLServer did not become ready; log:\n{tail}") from None
    return proc, url


def v2_body(row: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP32", "data": row}]}


# -- ours ---------------------------------------------------------------------------------------------------


class ModelService(C.Service):
    """`C.Service` that can be restarted on the same data dir (the registered model is loaded at start)."""

    def restart(self) -> int | None:
        assert self.proc is not None
        code = C.ProcessGroup.stop(self.proc, timeout=15.0)
        self.start()
        return code


def find_model(health: Any, model_id: str) -> dict[str, Any] | None:
    models = health.get("models", []) if isinstance(health, dict) else []
    if isinstance(models, dict):
        models = [{"model": k, **v} if isinstance(v, dict) else {"model": k} for k, v in models.items()]
    for entry in models:
        if isinstance(entry, dict) and model_id in (entry.get(k) for k in ("model", "model_id", "name", "id")):
            return entry
    return None


def wait_model(svc: C.Service, model_id: str, timeout: float) -> dict[str, Any]:
    """Poll ``/health/models`` until `model_id` is listed with its ``load_ms`` (bounded)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = get_json(svc.edge_url + "/health/models")
            entry = find_model(last, model_id)
            if entry is not None and entry.get("load_ms") is not None:
                return entry
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{model_id!r} not listed with load_ms in /health/models within {timeout}s (last: {last})")


def register(svc: C.Service, model_path: Path) -> dict[str, Any]:
    body = {"kind": "xgboost", "format": "ubj", "artifact": base64.b64encode(model_path.read_bytes()).decode(),
            "features": FEATURE_NAMES, "promote": True}
    return post_json(f"{svc.edge_url}/api/v1/models/{MODEL_ID}/versions", body, timeout=120)


def restart_and_measure(svc: ModelService, model_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """5: restart ours on the same data dir; read load_ms and VmRSS; the xgboost load reference beside it."""
    ref = C.run_json([C.PYTHON, __file__, "_load_ref", "--model", str(model_path)], timeout=120)
    t0 = time.monotonic()
    code = svc.restart()
    healthy_s = time.monotonic() - t0
    entry = wait_model(svc, MODEL_ID, 60)
    listed_s = time.monotonic() - t0
    time.sleep(args.settle)
    status = C.read_status(svc.pid)
    return {"ours": {"exit_code_before": code, "healthy_s": healthy_s, "model_listed_s": listed_s,
                     "load_ms": float(entry["load_ms"]), "entry": entry, "pid": svc.pid,
                     "rss_kib": int(status["VmRSS"].split()[0]), "hwm_kib": int(status["VmHWM"].split()[0]),
                     "threads": int(status["Threads"])},
            "ref": ref}


def check_predictions(urls: dict[str, tuple[str, Any]], rows: list[list[float]], expected: list[float],
                      client: Any) -> dict[str, Any]:
    """Every server's P(class 1) for a few rows against xgboost in this process (float32 tolerance)."""
    out: dict[str, Any] = {}
    for name, (url, make_body) in urls.items():
        got = [positive_probability(post_json(url, make_body(row))) for row in rows]
        out[name] = max((abs(g - e) if g is not None else float("inf")) for g, e in zip(got, expected, strict=True))
    if client is not None:
        got = [positive_probability(client.request("models", "predict", {"model": MODEL_ID, "features": row}))
               for row in rows]
        out["ours_mdp"] = max((abs(g - e) if g is not None else float("inf")) for g, e in zip(got, expected,
                                                                                             strict=True))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the tables quote medians (default 3)")
    parser.add_argument("--n", type=int, default=20_000, help="ZeroMQ latency: predictions per run (default 20000)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="time bound of a latency run (default 20)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up predictions per ZeroMQ client (default 1000)")
    parser.add_argument("--clients", type=int, default=4, help="throughput: ZeroMQ client processes (default 4)")
    parser.add_argument("--tput-seconds", type=float, default=5.0, help="throughput: seconds per run (default 5)")
    parser.add_argument("--tput-n", type=int, default=200_000, help="throughput: cap per client (default 200000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk -d per run (default 10)")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="wrk warm-up per target (default 2)")
    parser.add_argument("--connections", type=int, default=4, help="wrk -c (default 4)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--batch-n", type=int, default=200, help="batch: requests per run (default 200)")
    parser.add_argument("--batch-warmup", type=int, default=10, help="batch: warm-up requests (default 10)")
    parser.add_argument("--restarts", type=int, default=None, help="restarts for load_ms/RSS (default --repeat)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after a restart before VmRSS (default 2)")
    parser.add_argument("--start-timeout", type=float, default=120.0,
                        help="seconds for serve to answer /health (default 120; the first start trains defaults)")
    parser.add_argument("--mlserver", action=argparse.BooleanOptionalAction, default=True,
                        help="MLServer 1.7 as the second REST reference (default on)")
    parser.add_argument("--mlserver-venv", type=Path, default=MLSERVER_VENV)
    parser.add_argument("--install-timeout", type=float, default=1200.0, help="MLServer install bound (default 1200)")
    parser.add_argument("--startup", type=float, default=1.5, help="seconds allowed for client processes to start")
    args = parser.parse_args()
    C.exit_on_sigterm()
    machine = C.machine_info()
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.repeat < 1 or args.n < 1 or args.batch_n < 1:
        parser.error("--repeat, --n and --batch-n must be positive")
    restarts = args.repeat if args.restarts is None else max(1, args.restarts)

    tmp = tempfile.TemporaryDirectory(prefix="mlp-bench-models-")
    work = Path(tmp.name)
    extra: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    loads: list[dict[str, Any]] = []
    try:
        model_path = work / f"{MODEL_ID}.ubj"
        extra["model"] = train_model(model_path)
        print(f"model: {N_TREES} trees, depth {MAX_DEPTH}, {N_FEATURES} features, {extra['model']['bytes']:,} bytes "
              f"UBJ, trained in {extra['model']['train_s']} s", flush=True)
        rows = make_rows(CYCLE_ROWS, seed=11)
        rows_file = work / "rows.json"
        rows_file.write_text(json.dumps(rows))
        batch = make_rows(BATCH_ROWS, seed=13)
        batch_file = work / "batch.json"
        batch_file.write_text(json.dumps({"model": MODEL_ID, "rows": batch}, separators=(",", ":")))
        one = [json.dumps({"model": MODEL_ID, "features": r}, separators=(",", ":")) for r in rows[:WRK_ROWS]]
        scripts = {"one": wrk_script(work / "one.lua", one),
                   "v2": wrk_script(work / "v2.lua", [json.dumps(v2_body(r), separators=(",", ":"))
                                                      for r in rows[:WRK_ROWS]])}
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
        extra["wrk"] = wrk_version[0] if wrk_version else None

        mlserver_exe, mlserver_info = (None, "not requested (--no-mlserver)")
        if args.mlserver:
            try:
                mlserver_exe, mlserver_info = ensure_mlserver(args.mlserver_venv, args.install_timeout)
            except Exception as exc:  # the reference is optional: report it and go on
                mlserver_exe, mlserver_info = None, f"install failed: {exc}"
        extra["mlserver"] = {"measured": False, "info": mlserver_info}
        if mlserver_exe is None:
            print(f"MLServer: not measured ({mlserver_info})", flush=True)

        ref_endpoint = f"tcp://{C.HOST}:{C.free_port()}"
        ref_url = f"http://{C.HOST}:{C.free_port()}"
        lifetime = 900 + args.repeat * (2 * args.max_seconds + 3 * (args.seconds + 10) + 3 * args.tput_seconds + 120)
        t_first = time.monotonic()
        with C.ProcessGroup() as group, ModelService(start_timeout=args.start_timeout, extra_toml=EXTRA_TOML) as svc:
            first_start_s = time.monotonic() - t_first
            rep = group.start([C.PYTHON, __file__, "_rep_server", "--endpoint", ref_endpoint, "--model",
                               str(model_path), "--lifetime", str(lifetime)], stdout=subprocess.DEVNULL)
            ref = group.start([C.PYTHON, __file__, "_ref_http", "--port", ref_url.rsplit(":", 1)[1], "--model",
                               str(model_path), "--lifetime", str(lifetime)], stdout=subprocess.DEVNULL)
            C.wait_http(ref_url + "/health", 30, ref)
            mls: subprocess.Popen[Any] | None = None
            mls_url = None
            if mlserver_exe is not None:
                try:
                    mls, mls_url = start_mlserver(group, mlserver_exe, model_path, work, 180)
                    extra["mlserver"].update(measured=True, pid=mls.pid, url=mls_url)
                except Exception as exc:
                    extra["mlserver"]["info"] = f"{mlserver_info}; did not start: {exc}"
                    print(f"MLServer: not measured ({extra['mlserver']['info']})", flush=True)

            extra["service"] = {"pid": svc.pid, "edge": svc.edge_url, "broker": svc.broker,
                                "uvloop": C.uses_uvloop(svc.pid), "rss_kib_fresh": C.rss_kib(svc.pid),
                                "first_start_s": first_start_s}
            from ml_processing.bus import mdp

            client = mdp.Client(svc.broker, timeout=30.0)
            try:
                if not client.mmi_service("models", timeout=10):
                    raise RuntimeError("the serve process has no `models` service (is the models plugin built in?)")
                t0 = time.monotonic()
                extra["service"]["register"] = {**register(svc, model_path),
                                                "seconds": time.monotonic() - t0}
                extra["service"]["registered_entry"] = wait_model(svc, MODEL_ID, 60)
                expected = local_probabilities(model_path, rows[:8])
                checks = {"ours_rest": (svc.edge_url + "/api/v1/predict",
                                        lambda r: {"model": MODEL_ID, "features": r}),
                          "ref_aiohttp": (ref_url + "/predict", lambda r: {"model": MODEL_ID, "features": r})}
                if mls_url:
                    checks["ref_mlserver"] = (f"{mls_url}/v2/models/{MODEL_ID}/infer", v2_body)
                extra["max_abs_error"] = check_predictions(checks, rows[:8], expected, client)
                extra["service"]["first_reply_rest"] = post_json(svc.edge_url + "/api/v1/predict",
                                                                 {"model": MODEL_ID, "features": rows[0]})
            finally:
                client.close()
            print(f"serve pid {svc.pid} at {svc.edge_url} / {svc.broker} (uvloop: {extra['service']['uvloop']}, "
                  f"first start {first_start_s:.1f} s, with the model registered {time.monotonic() - t_first:.1f} s); "
                  f"REP reference pid {rep.pid}; aiohttp reference pid {ref.pid}; MLServer "
                  f"{'pid ' + str(mls.pid) if mls else 'not measured'}; max |p - xgboost| {extra['max_abs_error']}",
                  flush=True)

            targets = {"ref": ref_url + "/predict", "ours": svc.edge_url + "/api/v1/predict"}
            if mls_url:
                targets = {"ref": targets["ref"], "mlserver": f"{mls_url}/v2/models/{MODEL_ID}/infer",
                           "ours": targets["ours"]}
            for side, url in targets.items():  # warm-up, not recorded
                wrk(url, scripts["v2" if side == "mlserver" else "one"], args, seconds=args.warmup_seconds)
            batch_urls = {"ref": ref_url + "/predict/batch", "ours": svc.edge_url + "/api/v1/predict/batch"}

            for i in range(args.repeat):
                run: dict[str, Any] = {"repeat": i + 1}
                for side, endpoint, kind in (("ref", ref_endpoint, "raw"), ("ours", svc.broker, "mdp")):
                    run[f"zmq_{side}"] = run_clients(kind, endpoint, rows_file, args, clients=1, n=args.n,
                                                     duration=args.max_seconds)
                for side, url in targets.items():
                    script = scripts["v2" if side == "mlserver" else "one"]
                    run[f"rest_{side}"] = wrk(url, script, args)
                    # one request at a time: the latency of a request, without the queueing of concurrent ones
                    run[f"rest1_{side}"] = wrk(url, script, args, connections=1)
                for side, url in batch_urls.items():
                    run[f"batch_{side}"] = run_batch(url, batch_file, args)
                for side, endpoint, kind in (("ref", ref_endpoint, "raw"), ("ours", svc.broker, "mdp")):
                    run[f"tput_{side}"] = run_clients(kind, endpoint, rows_file, args, clients=args.clients,
                                                      n=args.tput_n, duration=args.tput_seconds)
                dead = [p.pid for p in (rep, ref, mls, svc.proc) if p is not None and p.poll() is not None]
                if dead:
                    raise RuntimeError(f"a server died during the run (pids {dead})")
                runs.append(run)
                mls_text = (f", MLServer {run['rest_mlserver']['p50_us']:.0f} us / "
                            f"{run['rest_mlserver']['rps']:,.0f} req/s" if "rest_mlserver" in run else "")
                print(f"repeat {i + 1}/{args.repeat}: ZeroMQ p50 ref {run['zmq_ref']['p50_us']:.0f} us, ours "
                      f"{run['zmq_ours']['p50_us']:.0f} us; REST p50 ref {run['rest_ref']['p50_us']:.0f} us / "
                      f"{run['rest_ref']['rps']:,.0f} req/s{mls_text}, ours {run['rest_ours']['p50_us']:.0f} us / "
                      f"{run['rest_ours']['rps']:,.0f} req/s; batch p50 ref {run['batch_ref']['p50_us'] / 1000:.2f} "
                      f"ms, ours {run['batch_ours']['p50_us'] / 1000:.2f} ms; {args.clients} clients ref "
                      f"{run['tput_ref']['rps']:,.0f}/s, ours {run['tput_ours']['rps']:,.0f}/s", flush=True)

            extra["service"]["rss_kib_after_load"] = C.rss_kib(svc.pid)
            extra["service"]["hwm_kib_after_load"] = int(C.read_status(svc.pid)["VmHWM"].split()[0])
            extra["service"]["caches"] = get_json(svc.edge_url + "/metrics/ml").get("caches")
            extra["reference_rss_kib"] = {"aiohttp": C.rss_kib(ref.pid), "rep": C.rss_kib(rep.pid)}
            if mls is not None:
                extra["reference_rss_kib"]["mlserver"] = C.rss_kib(mls.pid)
            for j in range(restarts):
                load = restart_and_measure(svc, model_path, args)
                loads.append({"restart": j + 1, **load})
                print(f"restart {j + 1}/{restarts}: load_ms ours {load['ours']['load_ms']:.1f} (xgboost alone "
                      f"{load['ref']['load_ms']:.1f}), healthy after {load['ours']['healthy_s']:.1f} s, VmRSS "
                      f"{load['ours']['rss_kib'] / 1024:.1f} MiB", flush=True)
    finally:
        tmp.cleanup()

    return report(args, runs, loads, extra, machine)


def report(args: argparse.Namespace, runs: list[dict[str, Any]], loads: list[dict[str, Any]],
           extra: dict[str, Any], machine: dict[str, Any]) -> int:
    def med(key: str, field: str) -> float:
        return C.median(r[key][field] for r in runs if key in r)

    def times(value: float) -> str:
        return "-" if value != value else f"{value:.2f}x"

    def row(label: str, ref: str, ours: str, scale: float = 1.0) -> list[Any]:
        return [label, med(ref, "p50_us") / scale, med(ref, "p99_us") / scale, med(ours, "p50_us") / scale,
                med(ours, "p99_us") / scale, med(ours, "p50_us") / med(ref, "p50_us"), med(ref, "rps"),
                med(ours, "rps")]

    mls_measured = any("rest_mlserver" in r for r in runs)
    for r in runs:  # the batch client's rate, for the table
        for key in ("batch_ref", "batch_ours"):
            r[key]["rps"] = 1e6 / r[key]["mean_us"] if r[key].get("mean_us") else float("nan")
    rows = [row("1. one row, ZeroMQ, 1 client (us) vs bare REP", "zmq_ref", "zmq_ours"),
            row("2. one row, REST wrk (us) vs bare aiohttp", "rest_ref", "rest_ours")]
    if mls_measured:
        rows.append(row("2. one row, REST wrk (us) vs MLServer 1.7", "rest_mlserver", "rest_ours"))
    rows.append(row("2. one row, REST, one connection (us) vs bare aiohttp", "rest1_ref", "rest1_ours"))
    if mls_measured:
        rows.append(row("2. one row, REST, one connection (us) vs MLServer 1.7", "rest1_mlserver", "rest1_ours"))
    rows += [row(f"3. {BATCH_ROWS:,} rows, REST (ms) vs bare aiohttp", "batch_ref", "batch_ours", 1000.0),
             row(f"4. one row, {args.clients} ZeroMQ client processes (us) vs bare REP", "tput_ref", "tput_ours")]
    print(f"\nxgboost {N_TREES} trees x depth {MAX_DEPTH}, {N_FEATURES} features; wrk -t{args.threads} "
          f"-c{args.connections} -d{int(args.seconds)}s; medians of {len(runs)} repeats")
    C.print_table(["test (ours vs reference)", "ref p50", "ref p99", "ours p50", "ours p99", "p50 ratio",
                   "ref req/s", "ours req/s"], [[*r[:5], times(r[5]), *r[6:]] for r in rows])

    load_ms = C.median(x["ours"]["load_ms"] for x in loads)
    ref_load_ms = C.median(x["ref"]["load_ms"] for x in loads)
    rss_mib = C.median(x["ours"]["rss_kib"] for x in loads) / 1024
    ref_rss = {k: v / 1024 for k, v in extra.get("reference_rss_kib", {}).items()}  # MiB
    nan = float("nan")
    after_load_mib = extra["service"]["rss_kib_after_load"] / 1024
    mls_rss = f"{ref_rss['mlserver']:.1f} MiB" if "mlserver" in ref_rss else "not measured"
    print(f"\nmodel load and memory; medians of {len(loads)} restarts")
    C.print_table(["measure", "reference", "ours", "ratio"], [
        ("5. load_ms after a restart vs xgboost.Booster load + 1 prediction", ref_load_ms, load_ms,
         times(load_ms / ref_load_ms)),
        ("5. VmRSS MiB after a restart vs the bare aiohttp reference", ref_rss.get("aiohttp", nan), rss_mib,
         times(rss_mib / ref_rss.get("aiohttp", nan))),
        ("5. VmRSS MiB after the load runs vs MLServer after the same", ref_rss.get("mlserver", nan),
         after_load_mib, times(after_load_mib / ref_rss.get("mlserver", nan)))])

    print()
    zmq_ratio = med("zmq_ours", "p50_us") / med("zmq_ref", "p50_us")
    rest_p50 = med("rest_ours", "p50_us")
    rest1_p50 = med("rest1_ours", "p50_us")
    rest_rps = med("rest_ours", "rps")
    batch_ms = med("batch_ours", "p50_us") / 1000
    tput = med("tput_ours", "rps")
    verdicts = [
        C.verdict("models 1. one row over ZeroMQ: p50 <= 0.5x bare REP + xgboost", zmq_ratio <= TARGET_ZMQ_RATIO,
                  f"ours {med('zmq_ours', 'p50_us'):.0f} us vs ref {med('zmq_ref', 'p50_us'):.0f} us = "
                  f"{zmq_ratio:.2f}x (target <= {TARGET_ZMQ_RATIO}x); p99 ours {med('zmq_ours', 'p99_us'):.0f} us, "
                  f"ref {med('zmq_ref', 'p99_us'):.0f} us"),
        C.verdict("models 2. one row over REST: p50 < 300 us (one connection)", rest1_p50 < TARGET_REST_P50_US,
                  f"ours {rest1_p50:.0f} us (bare aiohttp + xgboost {med('rest1_ref', 'p50_us'):.0f} us); at "
                  f"{args.connections} connections ours {rest_p50:.0f} us, aiohttp {med('rest_ref', 'p50_us'):.0f} us"),
    ]
    if mls_measured:
        mls_rps = med("rest_mlserver", "rps")
        verdicts.append(C.verdict("models 2. one row over REST: req/s >= 4x MLServer 1.7",
                                  rest_rps >= TARGET_VS_MLSERVER * mls_rps,
                                  f"ours {rest_rps:,.0f} req/s vs MLServer {mls_rps:,.0f} req/s = "
                                  f"{rest_rps / mls_rps:.2f}x (target >= {TARGET_VS_MLSERVER}x; bare aiohttp "
                                  f"{med('rest_ref', 'rps'):,.0f} req/s)"))
    else:
        verdicts.append(C.verdict("models 2. one row over REST: req/s >= 4x MLServer 1.7", None,
                                  f"MLServer not measured: {extra['mlserver']['info']}; ours {rest_rps:,.0f} "
                                  f"req/s, bare aiohttp {med('rest_ref', 'rps'):,.0f} req/s"))
    verdicts += [
        C.verdict(f"models 3. {BATCH_ROWS:,} rows over REST: p50 < 15 ms", batch_ms < TARGET_BATCH_MS,
                  f"ours {batch_ms:.2f} ms (bare aiohttp + xgboost {med('batch_ref', 'p50_us') / 1000:.2f} ms)"),
        C.verdict(f"models 4. {args.clients} ZeroMQ client processes: >= 8,000 predictions/s", tput >= TARGET_TPUT,
                  f"ours {tput:,.0f}/s (bare REP + xgboost {med('tput_ref', 'rps'):,.0f}/s)"),
        C.verdict("models 5. load_ms after a restart < 500 ms", load_ms < TARGET_LOAD_MS,
                  f"ours {load_ms:.1f} ms (xgboost.Booster load + 1 prediction {ref_load_ms:.1f} ms)"),
        C.verdict("models 5. VmRSS of serve with its models loaded < 512 MiB", rss_mib < TARGET_RSS_MB,
                  f"{rss_mib:.1f} MiB after a restart, {after_load_mib:.1f} MiB after the load runs (bare aiohttp "
                  f"+ xgboost {ref_rss.get('aiohttp', nan):.1f} MiB, MLServer {mls_rss})"),
    ]
    worst = max(extra.get("max_abs_error", {}).values(), default=float("nan"))
    verdicts.append(C.verdict("models: predictions agree with xgboost (|p - p_xgboost| < 1e-4)", worst < 1e-4,
                              f"max abs difference {extra.get('max_abs_error')}"))
    errors = sum(r[k].get("errors", 0) for r in runs for k in r if k.startswith("rest_"))
    if errors:
        verdicts.append(C.verdict("models 2. no errors under load", False,
                                  f"{errors} socket errors or non-2xx responses across all wrk runs"))
    path = C.write_results("bench_models", {"params": {k: str(v) if isinstance(v, Path) else v
                                                       for k, v in vars(args).items()},
                                            "runs": runs, "loads": loads, "verdicts": verdicts,
                                            "medians": {"rows": rows, "load_ms": load_ms, "ref_load_ms": ref_load_ms,
                                                        "rss_mib": rss_mib}, **extra}, machine)
    print(f"\nresults: {path}")
    return 0


def _roles(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role")
    parser.add_argument("--endpoint")
    parser.add_argument("--port", type=int)
    parser.add_argument("--url")
    parser.add_argument("--model")
    parser.add_argument("--rows-file")
    parser.add_argument("--body-file")
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--kind", default="mdp")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--start-at", type=float, default=0.0)
    a = parser.parse_args(argv)
    if a.role == "_rep_server":
        return role_rep_server(a.endpoint, a.model, a.lifetime)
    if a.role == "_ref_http":
        return role_ref_http(a.port, a.model, a.lifetime)
    if a.role == "_load_ref":
        return role_load_ref(a.model)
    if a.role == "_client":
        return role_client(a.kind, a.endpoint, a.rows_file, a.n, a.duration, a.warmup, a.start_at)
    if a.role == "_http_client":
        return role_http_client(a.url, a.body_file, a.n, a.duration, a.warmup)
    raise SystemExit(f"unknown role {a.role!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        sys.exit(_roles(sys.argv[1:]))
    sys.exit(main())
