"""Batch indicators: the registry mirrors TA-Lib's metadata, results equal TA-Lib's, bad input is named."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import talib

from ml_processing.bus import codec, mdp
from ml_processing.core.errors import BadRequest, TooLarge
from ml_processing.core.kernel import Kernel
from ml_processing.core.ops import convert
from ml_processing.plugins.indicators import builtin_indicators
from ml_processing.plugins.indicators.compute import MAX_BARS, compute
from ml_processing.plugins.indicators.ops import ComputeArgs, ComputeReply
from ml_processing.plugins.indicators.talib_indicators import EXCLUDED, GROUPS, talib_indicators
from ml_processing.sdk.talib_functions import TalibIndicator, parameter_ranges
from tests.conftest import make_config
from tests.support.kernels import running
from tests.support.series import ohlcv
from tests.support.thirdparty import plugin_module

REGISTRY = {i.name: i for i in builtin_indicators()}
TALIB = {i.name: i for i in talib_indicators()}


def run(args: dict[str, Any]) -> ComputeReply:
    """Op ``compute`` as the service runs it: the arguments checked against the declaration, then computed."""
    return compute(convert(args, ComputeArgs), REGISTRY)


def test_registry_is_every_function_of_the_indicator_groups() -> None:
    groups = talib.get_function_groups()
    expected = {name for group in GROUPS for name in groups[group]}
    assert set(TALIB) == expected
    assert set(REGISTRY) == expected | {"ICHIMOKU", "VWAP_SESSION"}
    assert not {name for name in groups["Pattern Recognition"]} & set(REGISTRY)
    assert set(GROUPS) | set(EXCLUDED) == set(groups)  # every TA-Lib group: offered, or left out with a reason
    assert {"ADD", "SUB", "MULT", "DIV", "MAX", "MIN", "SUM", "MAXINDEX", "SIN", "COS", "LN", "LOG10", "SQRT",
            "EXP"} <= set(REGISTRY)


@pytest.mark.parametrize("name", sorted({*talib.get_function_groups()["Math Operators"],
                                         *talib.get_function_groups()["Math Transform"]}))
def test_math_operators_and_transforms_equal_talib_in_batch_and_live(name: str) -> None:
    data = ohlcv(200)
    indicator = REGISTRY[name]
    params = indicator.resolve({})
    direct = getattr(talib, name)(*(data[c] for c in indicator.inputs), **params)
    direct = direct if isinstance(direct, (list, tuple)) else (direct,)
    start = indicator.lookback(params)
    batch = indicator.batch(data, params)
    stream = indicator.stream(params)
    live = [stream.update({c: float(data[c][i]) for c in indicator.inputs}) for i in range(200)]
    for k, expected in enumerate(direct):
        expected = np.asarray(expected, dtype=np.float64)
        np.testing.assert_array_equal(batch[k][start:], expected[start:])
        np.testing.assert_array_equal([row[k] for row in live][start:], expected[start:])


@pytest.mark.parametrize(("name", "params", "field", "words"), [
    ("SMA", {"timeperiod": 2**31}, "timeperiod", "<= 100000"),  # was a 500 (OverflowError)
    ("SMA", {"timeperiod": 2**70}, "timeperiod", "<= 100000"),
    ("SMA", {"timeperiod": 100_001}, "timeperiod", "<= 100000"),
    ("SMA", {"timeperiod": -(2**31)}, "timeperiod", ">= 1"),  # TA-Lib's "default" sentinel: refused too
    ("RSI", {"timeperiod": 1}, "timeperiod", ">= 2"),
    ("BBANDS", {"matype": 14}, "matype", "<= 13"),
    ("BBANDS", {"nbdevup": 1e38}, "nbdevup", "<= 3e+37"),
    ("BBANDS", {"nbdevup": True}, "nbdevup", "must be a number"),
    ("T3", {"vfactor": 1.5}, "vfactor", "<= 1"),
    ("MAMA", {"fastlimit": 0.0}, "fastlimit", ">= 0.01"),
    ("ICHIMOKU", {"tenkan": 2**31}, "tenkan", "<= 100000"),
])
def test_parameters_are_bounded_by_talib_and_the_c_type(name: str, params: dict[str, Any], field: str,
                                                         words: str) -> None:
    with pytest.raises(BadRequest) as caught:
        run({"close": [1.0, 2.0, 3.0], "indicators": [{"name": name, "params": params}]})
    assert caught.value.field == f"indicators[0].params.{field}"
    assert words in caught.value.message


def test_talib_parameter_ranges_come_from_talib() -> None:
    sma, rsi, bbands = (TalibIndicator(n) for n in ("SMA", "RSI", "BBANDS"))
    assert (sma.params[0].minimum, sma.params[0].maximum) == (1, 100_000)
    assert (rsi.params[0].minimum, rsi.params[0].maximum) == (2, 100_000)
    assert [value for value, _ in parameter_ranges("BBANDS")[3].choices] == list(range(14))  # type: ignore[union-attr]
    for matype in range(14):  # every value TA-Lib lists is one TA-Lib computes
        assert not np.isnan(bbands.batch(ohlcv(300), bbands.resolve({"matype": matype}))[0][-1])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_warming_a_stream_at_once_equals_feeding_it_bar_by_bar(name: str) -> None:
    """`IndicatorStream.warm` (how held and saved bars warm a new stream) leaves the state `update` leaves."""
    data = ohlcv(300)
    data["close"][:2] = np.nan  # a leading gap and one inside
    data["close"][120:123] = np.nan
    indicator = REGISTRY[name]
    params = indicator.resolve({})
    one_by_one, at_once = indicator.stream(params), indicator.stream(params)
    for i in range(300):
        last = one_by_one.update({c: float(v[i]) for c, v in data.items()})
    assert _same(at_once.warm(data), last)
    following = {c: float(v[-1]) * 1.01 for c, v in data.items()} | {"ts": float(data["ts"][-1] + 3_600_000)}
    assert _same(at_once.update(following), one_by_one.update(following))


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all((x != x and y != y) or x == pytest.approx(y, rel=1e-9) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", sorted(TALIB))
def test_batch_equals_talib_on_the_same_data(name: str) -> None:
    data = ohlcv()
    indicator = TALIB[name]
    defaults = {p.name: p.default for p in indicator.params}
    direct = getattr(talib, name)(*(data[c] for c in indicator.inputs), **defaults)
    direct = direct if isinstance(direct, (list, tuple)) else (direct,)
    result = run({**{k: v.tolist() for k, v in data.items()}, "indicators": [name]})
    assert list(result["values"]) == [indicator.output_key(defaults, o) for o in indicator.outputs]
    lookback = indicator.lookback(defaults)
    for key, expected in zip(result["values"], direct, strict=True):
        ours, expected = result["values"][key], np.asarray(expected)
        if expected.dtype.kind == "f":
            np.testing.assert_array_equal(ours, expected)
        else:  # integer outputs: TA-Lib's values from the lookback on, NaN (not TA-Lib's 0) before it
            np.testing.assert_array_equal(ours[lookback:], expected[lookback:].astype(np.float64))
            assert np.isnan(ours[:lookback]).all()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_lookback_is_where_values_start(name: str) -> None:
    data = ohlcv()
    indicator = REGISTRY[name]
    defaults = indicator.resolve({})
    outputs = indicator.batch(data, defaults)
    lookback = indicator.lookback(defaults)
    assert 0 <= lookback < len(data["close"])
    for series in outputs:
        assert np.all(np.isnan(series[:lookback])), f"{name}: a value before the lookback {lookback}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_gaps_flat_bars_and_zero_volume_do_not_crash(name: str) -> None:
    data = ohlcv(300)
    data["close"][50:60] = np.nan  # a gap
    for column in ("open", "high", "low", "close"):
        data[column][100:140] = 100.0  # flat bars
    data["volume"][:] = 0.0
    outputs = REGISTRY[name].batch(data, REGISTRY[name].resolve({}))
    assert all(len(series) == 300 for series in outputs)


@pytest.mark.parametrize(("params", "field"), [
    ({"timeperiod": 0}, "timeperiod"),
    ({"timeperiod": -5}, "timeperiod"),
    ({"timeperiod": "20"}, "timeperiod"),
    ({"timeperiod": 2.5}, "timeperiod"),
    ({"window": 20}, "window"),
])
def test_bad_parameters_are_rejected_by_name(params: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        run({"close": [1.0, 2.0, 3.0], "indicators": [{"name": "SMA", "params": params}]})
    assert caught.value.field is not None and caught.value.field.endswith(field)
    assert field in caught.value.message


@pytest.mark.parametrize(("args", "field"), [
    ({"close": [1.0, 2.0], "indicators": ["NOPE"]}, "indicators[0].name"),
    ({"close": [1.0, 2.0], "indicators": []}, "indicators"),
    ({"close": [1.0, 2.0], "indicators": [42]}, "indicators[0]"),
    ({"close": [1.0, "x"], "indicators": ["SMA"]}, "close[1]"),
    ({"close": "1,2,3", "indicators": ["SMA"]}, "close"),
    ({"close": [1.0, 2.0], "indicators": ["ATR"]}, "high"),
    ({"high": [1.0, 2.0, 3.0], "low": [1.0, 2.0], "close": [1.0, 2.0, 3.0], "indicators": ["ATR"]}, "low"),
])
def test_bad_requests_name_the_problem(args: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        run(args)
    assert caught.value.field == field


def test_more_than_a_million_bars_is_too_large() -> None:
    with pytest.raises(TooLarge):
        run({"close": [1.0] * (MAX_BARS + 1), "indicators": ["SMA"]})


def test_null_in_input_is_nan() -> None:
    close: list[float | None] = [float(i) for i in range(1, 31)]
    close[10] = None
    result = run({"close": close, "indicators": [{"name": "SMA", "params": {"timeperiod": 3}}]})
    values = result["values"]["SMA_3"]
    assert np.isnan(values[:2]).all() and values[2:10].tolist() == [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert np.isnan(values[10])  # TA-Lib's running sums carry a NaN forward; it never crashes


CUSTOM = textwrap.dedent('''
    import numpy as np
    from ml_processing.sdk import hookimpl
    from ml_processing.sdk.indicator import Indicator, Param

    class Spread(Indicator):
        """high - low, smoothed over `window` bars."""
        name = "SPREAD"
        inputs = ("high", "low")
        params = (Param("window", int, 3, minimum=1),)

        def lookback(self, params):
            return params["window"] - 1

        def batch(self, data, params):
            raw = data["high"] - data["low"]
            out = np.full(len(raw), np.nan)
            w = params["window"]
            if len(raw) >= w:
                out[w - 1:] = np.convolve(raw, np.ones(w) / w, mode="valid")
            return (out,)

    @hookimpl
    def register_indicators():
        return [Spread()]
''')


async def test_a_third_party_indicator_works_like_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with plugin_module(monkeypatch, tmp_path / "plugins", "acme_spread", CUSTOM):
        async with running(make_config(tmp_path, modules=("acme_spread",))) as kernel:
            client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=5.0)
            try:
                listed = {item["name"]: item for item in await client.request("indicators", "list")}
                assert listed["SPREAD"]["inputs"] == ["high", "low"] and "SMA" in listed
                data = ohlcv(50)
                reply = await client.request("indicators", "compute", {
                    "high": data["high"], "low": data["low"], "close": data["close"],
                    "indicators": [{"name": "SPREAD", "params": {"window": 4}}, "SMA"]})
            finally:
                client.close()
            expected = np.convolve(data["high"] - data["low"], np.ones(4) / 4, mode="valid")
            np.testing.assert_allclose(reply["values"]["SPREAD_4"][3:], expected, rtol=1e-12)
            np.testing.assert_array_equal(reply["values"]["SMA_30"], talib.SMA(data["close"], timeperiod=30))
            async with aiohttp.ClientSession() as http, http.post(f"{kernel.edge_url}/api/v1/indicators", json={
                    "high": data["high"].tolist(), "low": data["low"].tolist(),
                    "indicators": [{"name": "spread", "params": {"window": 2}}]}) as resp:
                body = await resp.json()
            assert resp.status == 200
            assert body["values"]["SPREAD_2"][0] is None  # NaN travels as null
            assert body["values"]["SPREAD_2"][1] == pytest.approx(float(np.mean((data["high"] - data["low"])[:2])))


async def test_rest_errors_and_health_count(kernel: Kernel) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{kernel.edge_url}/api/v1/indicators",
                             json={"close": [1, 2, 3], "indicators": [{"name": "SMA", "params": {"timeperiod": 0}}]}) as r:
            assert r.status == 400
            assert (await r.json())["error"]["field"] == "indicators[0].params.timeperiod"
        async with http.post(f"{kernel.edge_url}/api/v1/indicators",
                             json={"close": list(range(40)), "indicators": ["SMA", "EMA"]}) as r:
            assert r.status == 200
        async with http.get(f"{kernel.edge_url}/health") as r:
            assert (await r.json())["technical_analysis"]["indicators_calculated"] == 2


def test_docs_indicators_md_is_generated_from_the_registry() -> None:
    from ml_processing.plugins.indicators.docs import render

    path = Path(__file__).resolve().parents[3] / "docs" / "INDICATORS.md"
    assert path.read_text(encoding="utf-8") == render(builtin_indicators()), (
        "docs/INDICATORS.md is stale: python -m ml_processing.plugins.indicators.docs > docs/INDICATORS.md")


@pytest.mark.parametrize("as_arrays", [True, False], ids=["ndarray-ext", "plain-lists"])
async def test_rest_speaks_msgpack_when_asked(kernel: Kernel, as_arrays: bool) -> None:
    """``Content-Type``/``Accept: application/msgpack``: arrays in and out without text, same values."""
    data = ohlcv(300)
    columns = {k: (data[k] if as_arrays else data[k].tolist()) for k in ("high", "low", "close")}
    body = codec.packb({**columns, "indicators": ["RSI", {"name": "BBANDS", "params": {"timeperiod": 20}}]})
    async with aiohttp.ClientSession() as http, http.post(
            f"{kernel.edge_url}/api/v1/indicators", data=body,
            headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/msgpack"
        reply = codec.unpackb(await resp.read())
    np.testing.assert_array_equal(reply["values"]["RSI_14"], talib.RSI(data["close"], timeperiod=14))
    upper, _, _ = talib.BBANDS(data["close"], timeperiod=20)
    np.testing.assert_array_equal(reply["values"]["BBANDS_20_2_2_0.upperband"], upper)


async def test_rest_msgpack_errors_are_named_and_json(kernel: Kernel) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{kernel.edge_url}/api/v1/indicators", data=b"\xc1\xc1 not msgpack",
                             headers={"Content-Type": "application/msgpack"}) as r:
            assert r.status == 400 and r.content_type == "application/json"
            assert (await r.json())["error"]["field"] == "body"
        async with http.post(f"{kernel.edge_url}/api/v1/indicators", data=codec.packb([1, 2, 3]),
                             headers={"Content-Type": "application/msgpack"}) as r:
            assert r.status == 400 and "must be an object" in (await r.json())["error"]["message"]
        async with http.post(f"{kernel.edge_url}/api/v1/indicators",
                             data=codec.packb({"close": [1.0, 2.0], "indicators": ["NOPE"]}),
                             headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"}) as r:
            assert r.status == 400 and r.content_type == "application/json"
            assert (await r.json())["error"]["field"] == "indicators[0].name"
        async with http.get(f"{kernel.edge_url}/api/v1/ping", headers={"Accept": "application/msgpack"}) as r:
            assert r.status == 200 and codec.unpackb(await r.read()) == (await _json_ping(http, kernel))


async def _json_ping(http: aiohttp.ClientSession, kernel: Kernel) -> Any:
    async with http.get(f"{kernel.edge_url}/api/v1/ping") as r:
        assert r.content_type == "application/json"
        return await r.json()


NESTED = "<a list nested 1,000 levels deep>"  # written into the encoded body: no encoder nests that deep


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).replace(json.dumps(NESTED), "[" * 1000 + "1.0" + "]" * 1000).encode()


def _msgpack(body: dict[str, Any]) -> bytes:
    return codec.packb({"op": "compute", "args": body}).replace(codec.packb(NESTED), b"\x91" * 1000 + codec.packb(1.0))


@pytest.mark.parametrize(("body", "field"), [
    ({"close": list(range(40)), "indicators": [{"name": "SMA", "params": {"timeperiod": 2**31}}]},
     "indicators[0].params.timeperiod"),  # was 500 (OverflowError)
    ({"close": list(range(40)), "indicators": [{"name": "SMA", "params": {"timeperiod": 2**63}}]},
     "indicators[0].params.timeperiod"),
    ({"close": list(range(40)), "indicators": [{"name": "MA", "params": {"matype": -1}}]},
     "indicators[0].params.matype"),
    ({"close": [1.0, True, 3.0], "indicators": ["SMA"]}, "close[1]"),
    ({"close": [], "indicators": ["SMA"]}, "close"),
    ({"close": [1.0, 2.0], "volume": [], "indicators": ["OBV"]}, "volume"),
    ({"close": [1.0, 2.0, 3.0], "volume": [5.0, -1.0, 2.0], "indicators": ["OBV"]}, "volume[1]"),
    ({"close": [1.0, 2.0], "indicators": ["SMA"], "extra": 1}, "extra"),
    ({"close": [1.0, 2.0], "indicators": [{"name": "SMA", "bogus": 1}]}, "indicators[0].bogus"),
    ({"close": [1.0, 2.0], "indicators": [{"name": "SMA", "params": {"timeperiod": "20"}}]},
     "indicators[0].params.timeperiod"),
    ({"close": NESTED, "indicators": ["SMA"]}, None),  # was 500 (RecursionError)
    ({"close": [1.0, NESTED], "indicators": ["SMA"]}, None),
    ({"close": [1.0, 2.0], "indicators": [NESTED]}, None),
    ({"close": [1.0, 2.0], "indicators": [{"name": "SMA", "params": {"timeperiod": NESTED}}]}, None),
])
async def test_nothing_a_client_sends_is_a_server_error(kernel: Kernel, body: dict[str, Any], field: str | None
                                                        ) -> None:
    """One answer per edge case, over REST (JSON) and MDP (msgpack) alike, and the service keeps serving."""
    async with aiohttp.ClientSession() as http, http.post(
            f"{kernel.edge_url}/api/v1/indicators", data=_json(body),
            headers={"Content-Type": "application/json"}) as r:
        answer = await r.json()
        assert r.status == 400, answer
        assert field is None or answer["error"]["field"] == field, answer
    client = mdp.AsyncClient(kernel.endpoints["broker"][0], timeout=5.0)
    try:
        (raw,) = await client.request_raw("indicators", [_msgpack(body)])
        reply = codec.unpackb(raw)
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
        assert field is None or reply["error"].get("field") == field, reply
        reply = await client.request("indicators", "compute", {"close": [1.0, 2.0, 3.0], "indicators": ["SUM"]})
        assert reply["n"] == 3
    finally:
        client.close()
    health = await kernel.request("kernel", "health", {})
    assert health["actors"]["indicators"]["restarts"] == 0 and health["actors"]["indicators"]["state"] == "running"


async def test_math_operators_over_rest(kernel: Kernel) -> None:
    data = ohlcv(50)
    async with aiohttp.ClientSession() as http, http.post(f"{kernel.edge_url}/api/v1/indicators", json={
            "high": data["high"].tolist(), "low": data["low"].tolist(), "close": data["close"].tolist(),
            "indicators": ["SUB", "LN", {"name": "MAX", "params": {"timeperiod": 5}}]}) as r:
        body = await r.json()
        assert r.status == 200, body
    np.testing.assert_allclose(body["values"]["SUB"], data["high"] - data["low"], rtol=1e-12)
    np.testing.assert_allclose(body["values"]["LN"], np.log(data["close"]), rtol=1e-12)
    assert body["values"]["MAX_5"][4] == pytest.approx(max(data["close"][:5]), rel=1e-12)
