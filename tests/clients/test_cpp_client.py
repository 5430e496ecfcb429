"""The C++ client of clients/cpp, built with CMake and run against a real kernel over real sockets: ping,
predict and predict_batch giving the Python client's answers bit for bit, an error reply read as such, live
predictions received over pub/sub after publishing bars, and CURVE keys (a ping with them, none without).

Skipped with the reason when cmake, a compiler or the libraries (libzmq, cppzmq, msgpack-cxx) are missing,
except under CI, which installs them (.ci/run): there a missing piece fails."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import xgboost as xgb
import zmq

from ml_processing.bus import codec, mdp
from ml_processing.core.config import CacheConfig, Config, PluginSection, SecurityConfig
from ml_processing.core.security.keys import KeyRing
from ml_processing.sdk import synthetic
from tests.conftest import ROOT, make_config
from tests.support.kernels import running
from tests.support.models import X, xgb_artifact

SOURCE = ROOT / "clients" / "cpp"
IN_CI = bool(os.environ.get("CI"))
RUN_TIMEOUT_S = 30.0  # one command of the client, at most


def unavailable(reason: str) -> None:
    """Skip (a developer's machine without the tools), or fail under CI, which installs them."""
    if IN_CI:
        pytest.fail(f"{reason} (CI installs it: .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clients/cpp configured and built with CMake in a temporary directory; the path of ``mlp-cli``."""
    for tool in ("cmake", "pkg-config"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        unavailable("no C++ compiler (c++ or g++)")
    build = tmp_path_factory.mktemp("cpp-build")
    configure = subprocess.run(["cmake", "-S", str(SOURCE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                               capture_output=True, text=True, timeout=120)
    if configure.returncode != 0:  # what CMake could not find: libzmq, zmq.hpp or msgpack.hpp
        unavailable(f"CMake cannot configure clients/cpp: {(configure.stdout + configure.stderr)[-1500:]}")
    compiled = subprocess.run(["cmake", "--build", str(build), "-j2"], capture_output=True, text=True, timeout=600)
    assert compiled.returncode == 0, f"clients/cpp does not compile:\n{(compiled.stdout + compiled.stderr)[-4000:]}"
    return build / "mlp-cli"


async def run(cli: Path, *args: str) -> tuple[int, list[dict[str, Any]]]:
    """Run ``mlp-cli`` (bounded in time) while the kernel keeps serving; its exit code and JSON lines."""
    proc = await asyncio.create_subprocess_exec(str(cli), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"mlp-cli {' '.join(args[:3])} ran past {RUN_TIMEOUT_S}s") from None
    assert proc.returncode != 4 and not (proc.returncode == 1 and err), err.decode()  # a fault or a usage error
    return proc.returncode, [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def csv(path: Path, rows: Sequence[Sequence[float]]) -> Path:
    """Rows as CSV, every number as its shortest repr, so the C++ side reads back the same float64."""
    path.write_text("".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows))
    return path


def decode_in_cpp(cli: Path, body: bytes) -> subprocess.CompletedProcess[str]:
    """``mlp-cli json``: one msgpack body on stdin, its JSON text on stdout."""
    return subprocess.run([str(cli), "json"], input=body.decode("latin-1"), capture_output=True, text=True,
                          encoding="latin-1", timeout=RUN_TIMEOUT_S)


@pytest.mark.parametrize("dtype", ["<f8", "<f4", "<i8", "<i4", "<i2", "|i1", "<u8", "<u4", "<u2", "|u1", "|b1",
                                   ">f8", ">i4"])
def test_ndarrays_of_every_dtype_decode_as_numpy_reads_them(cli: Path, dtype: str) -> None:
    values = np.array([[0, 1, 2], [3, 100, 127]]).astype(dtype)
    if dtype[1] in "fi":
        values[0, 0] = -7
    if dtype[1] == "f":
        values[1, 2] = 0.1  # not exact in binary: the shortest repr of the stored value
    header = bytes([len(dtype)]) + dtype.encode() + bytes([2]) + b"".join(n.to_bytes(8, "little") for n in (2, 3))
    body = msgpack.packb({"a": msgpack.ExtType(1, header + values.tobytes())})  # big-endian stays as sent
    done = decode_in_cpp(cli, body)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"a": values.astype(float if dtype[1] == "f" else int).tolist()}


def test_a_malformed_ndarray_is_refused_not_read(cli: Path) -> None:
    good = codec.packb({"a": np.arange(3.0)})
    assert json.loads(decode_in_cpp(cli, good).stdout) == {"a": [0.0, 1.0, 2.0]}
    short = msgpack.packb(msgpack.ExtType(1, b"\x03<f8\x01" + (3).to_bytes(8, "little") + b"\x00" * 16))
    strings = msgpack.packb(msgpack.ExtType(1, b"\x03<U1\x01" + (1).to_bytes(8, "little") + b"\x00" * 4))
    for body, words in ((short, "size does not match"), (strings, "not a number type"), (b"\xc1", "not valid")):
        done = decode_in_cpp(cli, body)
        assert done.returncode == 4 and words in done.stderr, done.stderr


def uncached(cfg: Config) -> Config:
    """No prediction cache: each client's answer is computed for its own request."""
    return dataclasses.replace(cfg, cache=CacheConfig(prediction_cache_ttl=0.0))


async def test_ping_predict_and_batch_answer_as_the_python_client_does(cli: Path, tmp_path: Path) -> None:
    async with running(uncached(make_config(tmp_path, modules=()))) as kernel:
        await kernel.request("models", "register", {"model_id": "m", "kind": "xgboost", "artifact": xgb_artifact()})
        broker = kernel.endpoints["broker"][0]
        python = mdp.AsyncClient(broker, timeout=5.0)
        try:
            code, [pong] = await run(cli, "ping", "--broker", broker)
            assert code == 0 and pong["result"] == "pong"

            row = X[3].tolist()
            code, [ours] = await run(cli, "predict", "m", ",".join(map(repr, row)), "--broker", broker)
            theirs = await python.request("models", "predict", {"model": "m", "features": row})
            assert code == 0 and not ours["cached"] and not theirs["cached"]
            for key in ("model", "version", "prediction", "probabilities", "classes", "path"):
                assert ours[key] == theirs[key], key  # probabilities equal bit for bit (shortest repr both ways)

            rows = X[:50]
            code, [batch] = await run(cli, "batch", "m", "--rows-file", str(csv(tmp_path / "rows.csv", rows)),
                                      "--broker", broker)
            expected = await python.request("models", "predict_batch", {"model": "m", "rows": rows.tolist()})
            assert code == 0 and batch["rows"] == 50
            assert batch["predictions"] == expected["predictions"].tolist()
            assert batch["probabilities"] == expected["probabilities"].tolist()
            assert batch["classes"] == expected["classes"] and batch["version"] == expected["version"] == 1
        finally:
            python.close()


async def test_error_replies_are_read_with_their_code_and_field(cli: Path, tmp_path: Path) -> None:
    async with running(make_config(tmp_path, modules=())) as kernel:
        await kernel.request("models", "register", {"model_id": "m", "kind": "xgboost", "artifact": xgb_artifact()})
        broker = kernel.endpoints["broker"][0]
        code, [unknown] = await run(cli, "predict", "nope", "1,2,3,4,5,6", "--broker", broker)
        assert code == 2 and unknown["error"]["code"] == "not_found" and unknown["error"]["field"] == "model"
        assert "nope" in unknown["error"]["message"]
        code, [narrow] = await run(cli, "predict", "m", "1,2", "--broker", broker)  # 2 features for a 6-feature model
        assert code == 2 and narrow["error"]["code"] == "bad_request"


async def test_a_subscription_receives_the_predictions_of_the_bars_it_published(cli: Path, tmp_path: Path) -> None:
    """The live path from C++ alone: bars published on ``bar.CPP.1m``, predictions read on ``prediction.CPP``."""
    options = {"defaults": False, "live": [{"model": "m", "horizon": 0}]}
    cfg = make_config(tmp_path, modules=(), sections={"models": PluginSection(True, options),
                                                      "indicators": PluginSection(True, {"timeframes": []})})
    async with running(cfg) as kernel:
        market = synthetic.market(400, seed=5, momentum=0.25)
        fitted = await kernel.request("features", "fit", {"pipeline": "default", **market})
        rows = await kernel.request("features", "transform", {"pipeline": fitted["pipeline"], **market})
        labels = (np.diff(market["close"])[rows["index"][:-1]] > 0).astype(int)
        booster = xgb.train({"objective": "binary:logistic", "nthread": 1, "max_depth": 2},
                            xgb.DMatrix(np.asarray(rows["values"][:-1]), label=labels), num_boost_round=5)
        await kernel.request("models", "register", {"model_id": "m", "kind": "xgboost", "pipeline": fitted["pipeline"],
                                                     "artifact": bytes(booster.save_raw(raw_format="ubj"))})
        live = synthetic.market(60, seed=6, momentum=0.25)
        bars = [[b["ts"], b["open"], b["high"], b["low"], b["close"], b["volume"]] for b in synthetic.rows(live)]
        expected = len(bars) - 20  # every bar after the pipeline's 20-bar lookback
        code, lines = await run(cli, "live", "CPP", "1m", "--bars-file", str(csv(tmp_path / "bars.csv", bars)),
                                "--count", str(expected), "--pub-in", kernel.endpoints["pub_in"][0],
                                "--pub-out", kernel.endpoints["pub_out"][0], "--timeout-ms", "5000")
        assert code == 0 and len(lines) == expected, lines[-1:]
        assert {line["topic"] for line in lines} == {"prediction.CPP"}
        bodies = [line["body"] for line in lines]
        assert [b["ts"] for b in bodies] == [int(bar[0]) for bar in bars[20:]]
        assert all(b["symbol"] == "CPP" and b["timeframe"] == "1m" and b["model"] == "m@1" for b in bodies)
        assert all(len(b["probabilities"]) == 2 and sum(b["probabilities"]) == pytest.approx(1.0) for b in bodies)


async def test_curve_keys_are_needed_and_enough(cli: Path, tmp_path: Path) -> None:
    cfg = dataclasses.replace(make_config(tmp_path, modules=()), security=SecurityConfig(auth=True))
    ring = KeyRing(cfg.data_path / cfg.security.directory)
    public, secret = ring.add_client("cpp-engine", ["read", "compute"])
    assert secret is not None
    server, _ = ring.server()
    key_file = tmp_path / "cpp-engine.key"
    key_file.write_text(json.dumps({"server": server, "public": public, "secret": secret}))
    async with running(cfg) as kernel:
        broker = kernel.endpoints["broker"][0]
        code, [pong] = await run(cli, "ping", "--broker", broker, "--keys", str(key_file))
        assert code == 0 and pong["result"] == "pong"
        code, [pong] = await run(cli, "ping", "--broker", broker, "--server-key", server, "--public-key", public,
                                 "--secret-key", secret)
        assert code == 0 and pong["result"] == "pong"
        code, [refused] = await run(cli, "ping", "--broker", broker, "--timeout-ms", "1000")
        assert code == 3 and refused["error"]["code"] == "timeout"  # the handshake fails: no answer at all
        stranger_public, stranger_secret = (key.decode() for key in zmq.curve_keypair())
        code, [refused] = await run(cli, "ping", "--broker", broker, "--timeout-ms", "1000", "--server-key", server,
                                    "--public-key", stranger_public, "--secret-key", stranger_secret)
        assert code == 3 and refused["error"]["code"] == "timeout"
