"""The feature contract: every extractor a real kernel registers (entry points included) meets the checks
ml-processing ships (`ml_processing.checks.features`); the pipeline streams each extractor, and whole
pipelines, exactly as it extracts them in batch (same NaNs, values within 1e-9 relative); references
written here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import talib

from ml_processing import checks
from ml_processing.core.errors import BadRequest
from ml_processing.plugins.features import pipeline as P
from ml_processing.plugins.features.actor import DEFAULT_SPEC
from ml_processing.plugins.features.examples import TWENTY_FEATURES as TWENTY
from ml_processing.sdk.feature import FeatureExtractor
from tests.support.registries import FOUND, REGISTRIES
from tests.support.series import quarter_hours as ohlcv
from tests.support.series import rows_of

EXTRACTORS = checks.pytest_cases(FOUND, "features")


def assert_rows_equal(batch: np.ndarray, streamed: np.ndarray, names: list[str]) -> None:
    assert batch.shape == streamed.shape
    nan_b, nan_s = np.isnan(batch), np.isnan(streamed)
    mismatch = np.argwhere(nan_b != nan_s)
    assert not len(mismatch), f"NaN pattern differs first at row {mismatch[0][0]}, {names[mismatch[0][1]]}"
    np.testing.assert_allclose(streamed[~nan_s], batch[~nan_b], rtol=1e-9, atol=1e-12)


def stream_all(compiled: P.Compiled, fitted: Any, data: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    stream = P.PipelineStream(compiled, fitted)
    raw, transformed = [], []
    for bar in rows_of(data):
        row = stream.update(bar)
        raw.append(row)
        transformed.append(stream.transformed(row))
    return np.array(raw, dtype=np.float64), np.array(transformed, dtype=np.float64)


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_every_extractor_streams_what_it_computes_in_batch(extractor: FeatureExtractor) -> None:
    checks.features.check_stream_equals_batch(extractor, FOUND.registries)


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_every_extractor_rejects_bad_parameters_by_name(extractor: FeatureExtractor) -> None:
    checks.features.check_bad_parameters(extractor)


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_every_extractor_survives_gaps_flat_bars_and_zero_volume(extractor: FeatureExtractor) -> None:
    checks.features.check_odd_rows(extractor, FOUND.registries)


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_the_pipeline_streams_every_extractor_as_it_extracts(extractor: FeatureExtractor) -> None:
    """Through compiled pipelines: alone on OHLCV, and fed by an indicator's column that starts with NaN."""
    data = ohlcv()
    specs = [{"feature": extractor.name}]
    if extractor.inputs != ("ts",):
        specs.append({"feature": extractor.name, "inputs": ["RSI_14"] * len(extractor.inputs)})
    for spec in specs:
        compiled = P.compile_spec({"steps": [{"indicator": "RSI"}, spec]}, REGISTRIES)
        batch = P.extract(compiled, data)
        raw, _ = stream_all(compiled, None, data)
        assert_rows_equal(batch, raw, compiled.features)
        assert not np.isnan(batch[compiled.lookback:]).any(), "values start at the declared lookback"


@pytest.mark.parametrize("spec", [DEFAULT_SPEC, TWENTY], ids=["default", "twenty"])
def test_pipeline_streaming_rows_equal_batch_rows_raw_and_transformed(spec: dict[str, Any]) -> None:
    compiled = P.compile_spec(spec, REGISTRIES)
    train, live = ohlcv(1500, seed=3), ohlcv(700, seed=4)
    fitted = P.fit(compiled, P.extract(compiled, train))
    batch = P.extract(compiled, live)
    raw, transformed = stream_all(compiled, fitted, live)
    assert_rows_equal(batch, raw, compiled.features)
    assert_rows_equal(P.transform(compiled, fitted, batch), transformed, compiled.features)
    assert P.first_complete(batch) == compiled.lookback


def test_twenty_features_and_their_names() -> None:
    compiled = P.compile_spec(TWENTY, REGISTRIES)
    assert len(compiled.features) == 20
    assert compiled.features[:8] == ["log_return_1", "log_return_5", "return_10", "volatility_20", "zscore_20",
                                     "zscore_50(volume)", "RSI_14", "lag_1(RSI_14)"]
    assert {"atr_pct", "ema_gap", "ADX_14", "candle_1.body", "candle_1.range", "dow_minus_tod",
            "SMA_30(volume)"} <= set(compiled.features)
    assert "ATR_14" not in compiled.features and "tod_sin" not in compiled.features  # inputs only


def test_builtin_extractors_against_formulas_written_here() -> None:
    data = ohlcv(300)
    close, volume = data["close"], data["volume"]
    compiled = P.compile_spec({"steps": [
        {"feature": "return", "params": {"k": 3}}, {"feature": "log_return", "params": {"k": 2}},
        {"feature": "volatility", "params": {"window": 10}}, {"feature": "zscore", "params": {"window": 15},
                                                               "inputs": ["volume"]},
        {"feature": "candle", "params": {"relative": 0}}, {"feature": "time"}]}, REGISTRIES)
    m = P.extract(compiled, data)
    col = {name: m[:, j] for j, name in enumerate(compiled.features)}
    np.testing.assert_allclose(col["return_3"][3:], close[3:] / close[:-3] - 1, rtol=1e-12)
    np.testing.assert_allclose(col["log_return_2"][2:], np.log(close[2:] / close[:-2]), rtol=1e-12)
    lr = np.log(close[1:] / close[:-1])
    vol = [np.std(lr[i - 9:i + 1]) for i in range(9, len(lr))]
    np.testing.assert_allclose(col["volatility_10"][10:], vol, rtol=1e-6)
    z = [(volume[i] - volume[i - 14:i + 1].mean()) / volume[i - 14:i + 1].std() for i in range(14, len(volume))]
    np.testing.assert_allclose(col["zscore_15(volume)"][14:], z, rtol=1e-6)
    o, h, lo, c = data["open"], data["high"], data["low"], data["close"]
    np.testing.assert_allclose(col["candle_0.upper_wick"], h - np.maximum(o, c), rtol=1e-12)
    np.testing.assert_allclose(col["candle_0.lower_wick"], np.minimum(o, c) - lo, rtol=1e-12)
    ts = data["ts"][7]
    hours = (ts / 3_600_000) % 24
    assert col["time.tod_sin"][7] == pytest.approx(math.sin(2 * math.pi * hours / 24), abs=1e-9)
    weekday = (int(ts // 86_400_000) + 3) % 7  # 0 = Monday
    assert col["time.dow_cos"][7] == pytest.approx(math.cos(2 * math.pi * (weekday + hours / 24) / 7), abs=1e-9)
    rsi = P.extract(P.compile_spec({"steps": [{"indicator": "RSI"}]}, REGISTRIES), data)[:, 0]
    np.testing.assert_array_equal(rsi, talib.RSI(close, timeperiod=14))


@pytest.mark.parametrize(("spec", "field"), [
    ({"steps": []}, "steps"),
    ({"steps": [{"feature": "nope"}]}, "steps[0].feature"),
    ({"steps": [{"indicator": "NOPE"}]}, "steps[0].indicator"),
    ({"steps": [{"feature": "lag", "inputs": ["RSI_14"]}]}, "steps[0].inputs"),
    ({"steps": [{"feature": "lag", "inputs": ["close", "open"]}]}, "steps[0].inputs"),
    ({"steps": [{"indicator": "RSI"}, {"indicator": "RSI"}]}, "steps[1].as"),
    ({"steps": [{"feature": "lag", "indicator": "RSI"}]}, "steps[0]"),
    ({"steps": [{"feature": "lag", "colour": 1}]}, "steps[0].colour"),
    ({"steps": [{"feature": "lag", "params": {"nope": 1}}]}, "steps[0].params.nope"),
    ({"steps": [{"feature": "lag", "params": {"k": 0}}]}, "steps[0].params.k"),
    ({"steps": [{"feature": "lag"}, {"transform": "nope"}]}, "steps[1]"),
    ({"steps": [{"feature": "lag"}, {"transform": "clip", "params": {"lower": 2, "upper": 1}}]},
     "steps[1].params.lower"),
    ({"steps": [{"feature": "lag"}, {"transform": "standard", "columns": ["x"]}]}, "steps[1].columns"),
    ({"steps": [{"feature": "lag", "output": False}]}, "steps"),
    ({"steps": [{"feature": "lag"}], "nan": "ignore"}, "nan"),
    ({"steps": [{"feature": "lag"}], "fill": "zero"}, "fill"),
    ({"steps": [{"feature": "lag"}], "colour": 1}, "colour"),
])
def test_bad_specs_are_named(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        P.compile_spec(spec, REGISTRIES)
    assert err.value.field == field


def test_nan_policies() -> None:
    data = ohlcv(100)
    base = {"steps": [{"feature": "log_return"}, {"feature": "zscore", "params": {"window": 5}}]}
    for nan, expect_rows in (("drop", 100 - 4), ("fill", 100)):
        compiled = P.compile_spec({**base, "nan": nan, "fill": -9.0}, REGISTRIES)
        out, index = P.apply_nan_policy(compiled, P.extract(compiled, data))
        assert len(out) == expect_rows and not np.isnan(out).any()
        if nan == "drop":
            assert index[0] == 4
        else:
            assert out[0, 0] == -9.0
    compiled = P.compile_spec({**base, "nan": "reject"}, REGISTRIES)
    with pytest.raises(BadRequest, match="row 0 has no value for feature 'log_return_1'"):
        P.apply_nan_policy(compiled, P.extract(compiled, data))


def test_docs_features_md_is_generated_from_the_registry() -> None:
    from pathlib import Path

    from ml_processing.plugins.features.docs import registries, render

    path = Path(__file__).resolve().parents[3] / "docs" / "FEATURES.md"
    assert path.read_text(encoding="utf-8") == render(registries()), (
        "docs/FEATURES.md is stale: python -m ml_processing.plugins.features.docs > docs/FEATURES.md")
    assert {"log_return", "zscore", "pattern_cdlengulfing"} <= set(REGISTRIES["features"])
    assert "RSI" in REGISTRIES["indicators"]
    assert "`default` backs the default models. Its 4 features" in path.read_text(encoding="utf-8")
