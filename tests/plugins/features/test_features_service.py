"""The features service on a real kernel: REST and bus ops, versions on disk across restarts, the cache and
its metrics, live rows over real pub/sub, bad input named, a third party's extractor."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import numpy as np
import pytest
import zmq
import zmq.asyncio

from ml_processing.core.config import PluginSection
from ml_processing.core.errors import BadRequest, NotFound
from ml_processing.core.kernel import Kernel
from ml_processing.plugins.features import pipeline as P
from tests.conftest import make_config
from tests.support.kernels import running
from tests.support.registries import REGISTRIES
from tests.support.rest import call
from tests.support.series import quarter_hours as ohlcv
from tests.support.series import rows_of
from tests.support.thirdparty import plugin_module

SPEC = {"steps": [{"feature": "log_return"}, {"indicator": "RSI", "params": {"timeperiod": 5}},
                  {"feature": "zscore", "params": {"window": 10}, "inputs": ["volume"]},
                  {"transform": "minmax"}], "nan": "drop"}


def columns(n: int = 120, seed: int = 5) -> dict[str, list[float]]:
    return {k: v.tolist() for k, v in ohlcv(n, seed).items()}


def config(tmp_path: Path, modules: tuple[str, ...] = (), **features: Any) -> Any:
    return make_config(tmp_path, modules=modules, sections={"features": PluginSection(True, features)})


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Kernel]:
    async with running(config(tmp_path)) as kernel:
        yield kernel


async def test_extract_with_the_default_pipeline_and_inline_steps(service: Kernel) -> None:
    data = columns()
    async with aiohttp.ClientSession() as http:
        out = await call(http, service, "POST", "/api/v1/features/extract", {"pipeline": "default", **data})
        assert out["features"] == ["log_return_1", "volatility_20", "RSI_14", "zscore_20(volume)"]
        assert out["pipeline"] == "default@1" and out["first_complete"] == 20 and out["rows"] == 120
        assert out["values"][19][1] is None and None not in out["values"][20]  # NaN travels as null
        compiled = P.compile_spec({"steps": SPEC["steps"][:3]}, REGISTRIES)
        expected = P.extract(compiled, {k: np.array(v) for k, v in data.items()})
        inline = await call(http, service, "POST", "/api/v1/features/extract", {"steps": SPEC["steps"][:3], **data})
        assert inline["pipeline"] == "inline@0"
        got = np.array([[np.nan if v is None else v for v in row] for row in inline["values"]])
        np.testing.assert_array_equal(got, expected)


async def test_create_fit_transform_delete_and_versions(service: Kernel) -> None:
    data = columns(200)
    async with aiohttp.ClientSession() as http:
        made = await call(http, service, "POST", "/api/v1/features/pipeline", {"name": "mine", **SPEC})
        assert made["pipeline"] == "mine@1" and made["new"] and made["needs_fit"] and not made["fitted"]
        again = await call(http, service, "POST", "/api/v1/features/pipeline", {"name": "mine", **SPEC})
        assert again["pipeline"] == "mine@1" and not again["new"]  # same steps: same version
        error = await call(http, service, "POST", "/api/v1/features/transform",
                           {"pipeline": "mine", "rows": [[0.1, 50.0, 0.2]]}, status=400)
        assert "never fitted" in error["error"]["message"]
        fit = await call(http, service, "POST", "/api/v1/features/fit", {"pipeline": "mine", **data})
        assert fit["pipeline"] == "mine@2" and fit["fitted_from"] == "mine@1" and fit["rows"] == 200 - 9
        out = await call(http, service, "POST", "/api/v1/features/transform", {"pipeline": "mine", **data})
        values = np.array(out["values"])
        assert out["dropped"] == 9 and out["index"][0] == 9
        np.testing.assert_allclose(values.min(axis=0), 0.0, atol=1e-12)  # minmax on its training rows
        np.testing.assert_allclose(values.max(axis=0), 1.0, atol=1e-12)
        rows = await call(http, service, "POST", "/api/v1/features/transform",
                          {"pipeline": "mine@2", "rows": [[0.0, 50.0, 0.0], [None, 50.0, 0.0]]})
        assert len(rows["values"]) == 1 and rows["index"] == [0] and rows["dropped"] == 1
        listed = await call(http, service, "GET", "/api/v1/features/pipeline", pipeline="mine")
        (entry,) = listed["pipelines"]
        assert [v["version"] for v in entry["versions"]] == [1, 2]
        assert [v["fitted"] for v in entry["versions"]] == [False, True]
        assert entry["versions"][1]["features"] == ["log_return_1", "RSI_5", "zscore_10(volume)"]
        assert entry["versions"][1]["spec"]["steps"][3] == {"transform": "minmax", "params": {}}
        gone = await call(http, service, "DELETE", "/api/v1/features/pipeline", pipeline="mine", version=1)
        assert gone["deleted_versions"] == [1]
        await call(http, service, "DELETE", "/api/v1/features/pipeline", pipeline="default", status=400)
        await call(http, service, "DELETE", "/api/v1/features/pipeline", pipeline="mine")
        await call(http, service, "GET", "/api/v1/features/pipeline", status=404, pipeline="mine")
        assert not (service.config.data_path / "features" / "mine").exists()


async def test_versions_survive_a_restart_and_an_altered_file_is_refused(tmp_path: Path) -> None:
    data = {k: np.array(v) for k, v in columns(150).items()}
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        await kernel.request("features", "create", {"name": "mine", **SPEC})
        fitted = await kernel.request("features", "fit", {"pipeline": "mine", **data})
        before = await kernel.request("features", "transform", {"pipeline": "mine", **data})
    finally:
        await kernel.stop()
    root = kernel.config.data_path / "features"
    assert sorted(p.name for p in (root / "mine").iterdir()) == ["1.json", "2.json"]
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        after = await kernel.request("features", "transform", {"pipeline": fitted["pipeline"], **data})
        np.testing.assert_array_equal(after["values"], before["values"])
        listed = await kernel.request("features", "pipelines", {})
        assert {p["name"]: p["latest"] for p in listed["pipelines"]} == {"default": 1, "mine": 2}
    finally:
        await kernel.stop()
    record = json.loads((root / "mine" / "2.json").read_text())
    record["fitted"][0]["scale"][0] *= 2  # a tampered scaler
    (root / "mine" / "2.json").write_text(json.dumps(record))
    (root / "mine" / "3.json").write_bytes(b'{"name": "mine", "vers')  # a torn write from elsewhere
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        listed = await kernel.request("features", "pipelines", {"pipeline": "mine"})
        assert [v["version"] for v in listed["pipelines"][0]["versions"]] == [1]  # version 1 keeps serving
        assert "checksum mismatch" in listed["refused_files"][str(root / "mine" / "2.json")]
        assert str(root / "mine" / "3.json") in listed["refused_files"]
    finally:
        await kernel.stop()


async def test_cache_hits_are_reported_in_both_metrics(service: Kernel) -> None:
    data = columns()
    async with aiohttp.ClientSession() as http:
        first = await call(http, service, "POST", "/api/v1/features/extract", {"pipeline": "default", **data})
        second = await call(http, service, "POST", "/api/v1/features/extract", {"pipeline": "default", **data})
        assert not first["cached"] and second["cached"] and second["values"] == first["values"]
        data["close"][-1] += 1.0
        third = await call(http, service, "POST", "/api/v1/features/extract", {"pipeline": "default", **data})
        assert not third["cached"] and third["values"][-1] != first["values"][-1]
        ml = await call(http, service, "GET", "/metrics/ml")
        stats = ml["caches"]["features"]
        assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 2, 2)
        assert stats["hit_rate"] == pytest.approx(1 / 3, abs=1e-3)
        assert ml["features"]["pipelines"] == 1
        async with http.get(service.edge_url + "/metrics") as resp:
            text = await resp.text()
        assert 'mlp_cache_hits_total{cache="features"} 1.0' in text
        assert 'mlp_cache_misses_total{cache="features"} 2.0' in text
        health = await call(http, service, "GET", "/health")
        assert health["ml_status"]["feature_pipelines"] == 1


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"pipeline": "nope", "close": [1.0, 2.0]}, 404, "pipeline"),
    ({"pipeline": "default@7", "close": [1.0]}, 404, "version"),
    ({"steps": [{"feature": "nope"}], "close": [1.0]}, 400, "steps[0].feature"),
    ({"pipeline": "default", "close": [1.0, 2.0, 3.0], "volume": [1.0, 2.0]}, 400, "volume"),
    ({"pipeline": "default", "close": [1.0] * 30}, 400, "volume"),
    ({"pipeline": "default", "close": [1.0] * 10, "volume": [1.0] * 10}, 400, "close"),
    ({"pipeline": "default", "close": [1.0, "x"], "volume": [1.0, 2.0]}, 400, "close[1]"),
    ({"pipeline": "default", "close": {"a": 1}, "volume": [1.0]}, 400, "close"),
    ({"pipeline": "default", "close": [1.0] * 30, "volume": [1.0] * 30, "transform": "yes"}, 400, "transform"),
    # one answer per edge case, as on every endpoint that takes bars
    ({"pipeline": "default", "close": [], "volume": []}, 400, "close"),
    ({"pipeline": "default", "close": [1.0, True], "volume": [1.0, 2.0]}, 400, "close[1]"),
    ({"pipeline": "default", "close": [1.0] * 30, "volume": [1.0] * 29 + [-1.0]}, 400, "volume[29]"),
    ({"steps": [{"feature": "lag"}], "nan": "keep", "close": [1.0] * 5}, 400, "nan"),
    ({"pipeline": "default", "nan": "fill", "close": [1.0] * 30, "volume": [1.0] * 30}, 400, "nan"),
    ({"pipeline": "default", "steps": [{"feature": "lag"}], "close": [1.0] * 5}, 400, "steps"),
    ({"steps": [{"feature": "lag"}] * 257, "close": [1.0] * 5}, 400, "steps"),
    ({"close": [1.0] * 5}, 400, "pipeline"),
    ({"pipeline": "default", "bogus": 1, "close": [1.0] * 30, "volume": [1.0] * 30}, 400, "bogus"),
    ({"pipeline": "not a name", "close": [1.0]}, 400, "pipeline"),
])
async def test_bad_extract_requests_are_named(service: Kernel, body: dict[str, Any], status: int, field: str) -> None:
    async with aiohttp.ClientSession() as http:
        out = await call(http, service, "POST", "/api/v1/features/extract", body, status=status)
    assert out["error"]["field"] == field


async def test_unknown_nan_policies_are_refused_listing_the_allowed_ones(service: Kernel) -> None:
    async with aiohttp.ClientSession() as http:
        for path, body in (("/api/v1/features/pipeline", {"name": "x", "steps": [{"feature": "lag"}], "nan": "keep"}),
                           ("/api/v1/features/extract", {"steps": [{"feature": "lag"}], "nan": "keep", "close": [1.0]})):
            out = await call(http, service, "POST", path, body, status=400)
            assert out["error"]["field"] == "nan"
            assert "drop, fill, reject" in out["error"]["message"] and "'keep'" in out["error"]["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({"pipeline": "default", "rows": [[0.1, 0.2, 50.0, True]]}, "rows[0]"),
    ({"pipeline": "default", "rows": [[0.1, 0.2, 50.0, 1.0], [0.1]]}, "rows[1]"),
    ({"pipeline": "default", "rows": []}, "rows"),
    ({"pipeline": "default", "rows": [[0.1, 0.2, 50.0, 1.0]], "close": [1.0]}, "rows"),
])
async def test_bad_feature_rows_are_named(service: Kernel, body: dict[str, Any], field: str) -> None:
    async with aiohttp.ClientSession() as http:
        out = await call(http, service, "POST", "/api/v1/features/transform", body, status=400)
    assert out["error"]["field"] == field


@pytest.mark.parametrize(("change", "field"), [
    ({"volume": -1.0}, "bars[3].volume"),
    ({"close": True}, "bars[3].close"),
    ({"ts": 1.5}, "bars[3].ts"),
    ({"nope": 1}, "bars[3].nope"),
])
async def test_bad_stream_bars_are_named(service: Kernel, change: dict[str, Any], field: str) -> None:
    bars = [{**bar, "ts": int(bar["ts"])} for bar in rows_of(ohlcv(5, seed=3))]
    bars[3] = {**bars[3], **change}
    async with aiohttp.ClientSession() as http:
        out = await call(http, service, "POST", "/api/v1/features/stream",
                         {"pipeline": "default", "symbol": "X", "timeframe": "1h", "bars": bars}, status=400)
        assert out["error"]["field"] == field
        out = await call(http, service, "POST", "/api/v1/features/stream",
                         {"pipeline": "default", "symbol": "X", "timeframe": "1h", "bars": []}, status=400)
        assert out["error"]["field"] == "bars"
        out = await call(http, service, "GET", "/api/v1/features/row", status=400, symbol="X", timeframe="1 hour")
        assert out["error"]["field"] == "timeframe"


async def test_infinite_values_are_refused_on_the_bus(service: Kernel) -> None:
    """JSON cannot carry them; msgpack can: columns, feature rows and bars alike name the element."""
    inf = float("inf")
    for op, args, field in (
            ("extract", {"pipeline": "default", "close": np.array([1.0, inf]), "volume": [1.0, 2.0]}, "close[1]"),
            ("transform", {"pipeline": "default", "rows": np.array([[0.0, 0.0, 50.0, inf]])}, "rows[0]"),
            ("stream", {"pipeline": "default", "symbol": "X", "timeframe": "1h",
                        "bars": [{"ts": 0, "close": 1.0}, {"ts": 1, "close": -inf}]}, "bars[1].close")):
        with pytest.raises(BadRequest) as err:
            await service.request("features", op, args)
        assert err.value.field == field, err.value.message


def test_every_op_is_declared_with_its_role() -> None:
    from ml_processing.plugins.features.actor import Features

    roles = {name: spec.role for name, spec in Features.declarations().items() if spec.args is not None}
    assert roles == {"extractors": "read", "pipelines": "read", "row": "read", "extract": "compute",
                     "transform": "compute", "create": "admin", "fit": "admin", "delete": "admin",
                     "stream": "admin"}
    assert Features.needs == ("indicators",)


async def ticks_during(request: Any) -> int:
    """How often the event loop ran another task while `request` was answered in this process."""
    ticks, done = 0, False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    ticks = 0
    try:
        await request
    finally:
        done = True
        await task
    return ticks


async def test_large_requests_leave_the_event_loop_running(service: Kernel) -> None:
    """Extraction and transformation of large inputs run on the thread pool; many bars through a live
    state advance in slices: the loop keeps running other tasks while either is answered."""
    from ml_processing.plugins.features.examples import TWENTY_FEATURES

    data = ohlcv(100_000, seed=4)
    assert await ticks_during(service.request("features", "extract", {"pipeline": "default", **data})) > 10
    await service.request("features", "fit", {"pipeline": "default", **data})
    assert await ticks_during(service.request("features", "transform", {"pipeline": "default", **data})) > 10
    await service.request("features", "create", {"name": "twenty", **TWENTY_FEATURES})
    bars = [{**bar, "ts": int(bar["ts"])} for bar in rows_of(ohlcv(2_000, seed=4))]
    stream = service.request("features", "stream", {"pipeline": "twenty", "symbol": "X", "timeframe": "1m",
                                                   "bars": bars})
    assert await ticks_during(stream) >= 2_000 // 40  # one yield per slice of at most ~20 bars of 21 steps


async def test_bad_pipeline_requests_are_named(service: Kernel) -> None:
    async with aiohttp.ClientSession() as http:
        for body, field in (({"name": "bad name!", **SPEC}, "name"), ({"name": "x", "steps": "all"}, "steps"),
                            ({"name": "x", "steps": [{"transform": "standard"}]}, "steps")):
            out = await call(http, service, "POST", "/api/v1/features/pipeline", body, status=400)
            assert out["error"]["field"] == field
        out = await call(http, service, "POST", "/api/v1/features/fit",
                         {"pipeline": "default", **columns(15)}, status=400)
        assert "lookback" in out["error"]["message"]
        await call(http, service, "POST", "/api/v1/features/pipeline",
                   {"name": "plain", "steps": [{"feature": "lag"}]})
        out = await call(http, service, "POST", "/api/v1/features/fit", {"pipeline": "plain", **columns()}, status=400)
        assert "no transform to fit" in out["error"]["message"]
        out = await call(http, service, "POST", "/api/v1/features/transform",
                         {"pipeline": "default", "rows": [[1.0, 2.0]]}, status=400)
        assert out["error"]["field"] == "rows"
        health = await call(http, service, "GET", "/health")
        assert health["actors"]["features"]["state"] == "running"


async def test_live_rows_over_pubsub_equal_batch_and_follow_a_fit(tmp_path: Path) -> None:
    kernel = Kernel(config(tmp_path, live=["default", "mine@1"], pipelines={"mine": SPEC}))
    await kernel.start()
    ctx = zmq.asyncio.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    try:
        data = ohlcv(80, seed=9)
        bars = [{**bar, "ts": int(bar["ts"])} for bar in rows_of(data)]
        pub.connect(kernel.endpoints["pub_in"][0])
        sub.connect(kernel.endpoints["pub_out"][0])
        sub.setsockopt(zmq.SUBSCRIBE, b"feature.MSFT.15m")
        for _ in range(100):  # slow joiner, bounded: the first bar's rows come back
            await pub.send_multipart([b"bar.MSFT.15m", msgpack.packb(bars[0])])
            if await sub.poll(50):
                break
        else:
            pytest.fail("no feature row came back within 5 s")
        received = [msgpack.unpackb((await sub.recv_multipart())[1])]
        for bar in bars[1:]:
            await pub.send_multipart([b"bar.MSFT.15m", msgpack.packb(bar)])
        await pub.send_multipart([b"bar.MSFT.15m", msgpack.packb(bars[5])])  # stale: ignored
        while len(received) < 2 * len(bars):
            assert await sub.poll(3000), f"only {len(received)} rows arrived"
            received.append(msgpack.unpackb((await sub.recv_multipart())[1]))
        assert not await sub.poll(200)
        rows = {ref: [r for r in received if r["pipeline"] == ref] for ref in ("default@1", "mine@1")}
        for ref, spec in (("default@1", None), ("mine@1", SPEC)):
            compiled = P.compile_spec(spec or kernel_spec(), REGISTRIES)
            batch = P.extract(compiled, data)
            got = np.array([[np.nan if v is None else v for v in r["values"]] for r in rows[ref]])
            np.testing.assert_allclose(got, batch, rtol=1e-9)
            assert [r["ts"] for r in rows[ref]] == [b["ts"] for b in bars]
            assert rows[ref][-1]["transformed"] is None and rows[ref][-1]["complete"]
        await kernel.request("features", "fit", {"pipeline": "default", **ohlcv(300, seed=1)})
        nxt = {**bars[-1], "ts": bars[-1]["ts"] + 900_000}
        await pub.send_multipart([b"bar.MSFT.15m", msgpack.packb(nxt)])
        latest = await kernel.request("features", "row", {"symbol": "MSFT", "timeframe": "15m"})
        for _ in range(100):
            if latest["ts"] == nxt["ts"]:
                break
            await sub.poll(20)
            latest = await kernel.request("features", "row", {"symbol": "MSFT", "timeframe": "15m"})
        assert latest["pipeline"] == "default@2" and latest["transformed"] is not None  # warm stream, new fit
    finally:
        pub.close(0)
        sub.close(0)
        ctx.term()
        await kernel.stop()


def kernel_spec() -> dict[str, Any]:
    from ml_processing.plugins.features.actor import DEFAULT_SPEC

    return DEFAULT_SPEC


async def test_stream_op_gives_one_row_per_committed_bar(service: Kernel) -> None:
    data = ohlcv(60, seed=2)
    bars = [{**bar, "ts": int(bar["ts"])} for bar in rows_of(data)]
    first = await service.request("features", "stream", {"pipeline": "default", "symbol": "X", "timeframe": "1h",
                                                          "bars": bars[:30]})
    forming = {**bars[30], "final": False}
    rest = await service.request("features", "stream", {"pipeline": "default", "symbol": "X", "timeframe": "1h",
                                                         "bars": [bars[10], forming, *bars[30:]]})
    rows = first["rows"] + rest["rows"]
    assert len(rows) == 60  # the stale bar and the forming one give no row
    batch = P.extract(P.compile_spec(kernel_spec(), REGISTRIES), data)
    got = np.array([[np.nan if v is None else v for v in r["values"]] for r in rows])
    np.testing.assert_allclose(got, batch, rtol=1e-9)


THIRD_PARTY = textwrap.dedent('''
    import numpy as np
    from ml_processing.sdk.feature import FeatureExtractor, MapStream
    from ml_processing.sdk import hookimpl
    from ml_processing.sdk.indicator import Param

    class Spread(FeatureExtractor):
        name = "spread_pct"
        doc = "(high - low) / close * scale"
        inputs = ("high", "low", "close")
        params = (Param("scale", float, 100.0, minimum=0.0),)

        def lookback(self, params):
            return 0

        def batch(self, inputs, params, registries):
            high, low, close = inputs
            return ((high - low) / close * params["scale"],)

        def stream(self, params, registries):
            return MapStream(lambda h, lo, c: ((h - lo) / c * params["scale"],))

    @hookimpl
    def register_feature_extractors():
        return [Spread()]
''')


async def test_a_third_party_extractor_works_like_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with plugin_module(monkeypatch, tmp_path / "plugins", "acme_features", THIRD_PARTY):
        async with running(config(tmp_path, modules=("acme_features",))) as kernel:
            listed = await kernel.request("features", "extractors", {})
            assert "spread_pct" in {e["name"] for e in listed["extractors"]}
            data = ohlcv(50)
            out = await kernel.request("features", "extract", {
                "steps": [{"feature": "spread_pct", "params": {"scale": 10}}, {"feature": "lag", "inputs": ["spread_pct_10"]}],
                **data})
            assert out["features"] == ["spread_pct_10", "lag_1(spread_pct_10)"]
            np.testing.assert_allclose(out["values"][:, 0], (data["high"] - data["low"]) / data["close"] * 10, rtol=1e-12)
            rows = await kernel.request("features", "stream", {
                "pipeline": (await kernel.request("features", "create", {
                    "name": "acme", "steps": [{"feature": "spread_pct"}]}))["pipeline"],
                "symbol": "A", "timeframe": "1m", "bars": [{**b, "ts": int(b["ts"])} for b in rows_of(data)[:3]]})
            assert rows["rows"][2]["values"][0] == pytest.approx((data["high"][2] - data["low"][2]) / data["close"][2] * 100)


def test_a_well_formed_file_with_unusable_fitted_numbers_is_refused(tmp_path: Path) -> None:
    """A checksum proves the file is what was written; the loader still checks the numbers can be used."""
    import hashlib

    from ml_processing.plugins.features.store import Store, _canonical

    store = Store(tmp_path, REGISTRIES)
    base, _ = store.create("mine", SPEC)
    data = ohlcv(100)
    fitted = store.add_fitted(base, P.fit(base.compiled, P.extract(base.compiled, data)), 90)
    path = tmp_path / "mine" / f"{fitted.number}.json"
    record = json.loads(path.read_text())
    record.pop("sha256")
    record["fitted"][0]["scale"][1] = 0.0  # would divide by zero
    record["sha256"] = hashlib.sha256(_canonical(record)).hexdigest()
    path.write_bytes(_canonical(record))
    reloaded = Store(tmp_path, REGISTRIES)
    assert reloaded.load() == 1
    assert "fitted state does not match" in reloaded.refused[str(path)]
    assert reloaded.get("mine").number == 1


async def test_live_rows_are_warm_after_a_restart_from_the_market_state(tmp_path: Path) -> None:
    """The indicators service keeps the bars across a restart; the features service replays them through its
    live pipelines at start, so the first row after the restart is complete and equals the batch row."""
    data = ohlcv(60, seed=8)
    bars = [{**bar, "ts": int(bar["ts"])} for bar in rows_of(data)]
    cfg = make_config(tmp_path, modules=(), sections={"indicators": PluginSection(True, {"timeframes": []})})
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        await publish_bars(kernel, "IBM", "5m", bars[:59])
        series = await kernel.request("indicators", "series", {})
        assert series[0]["bars"] == 59
    finally:
        await kernel.stop()
    kernel = Kernel(cfg)
    await kernel.start()
    try:
        for _ in range(250):  # the replay runs as the features actor's task after its start
            stats = await kernel.request("kernel", "metrics_ml", {})
            if stats["features"]["series_warmed_from_market"] == 1:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the live pipelines were not warmed from the market state")
        await publish_bars(kernel, "IBM", "5m", bars[59:], wait_for_row=True)
        row = await kernel.request("features", "row", {"symbol": "IBM", "timeframe": "5m"})
        assert row["ts"] == bars[59]["ts"] and row["complete"]
        batch = P.extract(P.compile_spec(kernel_spec(), REGISTRIES), data)
        np.testing.assert_allclose(row["values"], batch[59], rtol=1e-9)
        assert stats["features"]["pipelines"] == 1
    finally:
        await kernel.stop()


async def publish_bars(kernel: Kernel, symbol: str, timeframe: str, bars: list[dict[str, Any]], *,
                       wait_for_row: bool = False) -> None:
    """Publish bars from a real PUB socket; return once the features service has a row for the last one."""
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    topic = f"bar.{symbol}.{timeframe}".encode()
    try:
        pub.connect(kernel.endpoints["pub_in"][0])
        last = bars[-1]["ts"]
        first = msgpack.packb(bars[0])
        for _ in range(200):  # slow joiner, bounded: until the first bar has been seen
            await pub.send_multipart([topic, first])
            try:
                row = await kernel.request("features", "row", {"symbol": symbol, "timeframe": timeframe})
                if row["ts"] >= bars[0]["ts"]:
                    break
            except NotFound:  # no row for the series yet
                pass
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the feed never reached the service")
        for bar in bars[1:]:
            await pub.send_multipart([topic, msgpack.packb(bar)])
        for _ in range(250):
            row = await kernel.request("features", "row", {"symbol": symbol, "timeframe": timeframe})
            if row["ts"] == last:
                return
            await asyncio.sleep(0.02)
        pytest.fail("the last bar never arrived")
    finally:
        pub.close(0)
        ctx.term()
