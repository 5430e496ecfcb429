"""Each shipped check fails, saying what is wrong, on a plugin that breaks its contract in that one way (and
passes on the same plugin done right)."""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import pickle
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from ml_processing import checks
from ml_processing.sdk import (
    BULLISH,
    BadRequest,
    Described,
    FeatureExtractor,
    Indicator,
    IndicatorStream,
    MapStream,
    MarketAnalyzer,
    ModelKind,
    Param,
    Pattern,
    PatternEvent,
    PatternStream,
    Prediction,
    Predictor,
    TextAnalyzer,
)
from tests.support.kernels import running
from tests.support.thirdparty import plugin_module

# -- indicators -----------------------------------------------------------------------------------------


class Momentum(Indicator):
    """close - close `period` bars ago, with an O(1) stream; the faults below are one override each."""

    name = "MOM_TEST"
    params = (Param("period", int, 3, minimum=1),)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return int(params["period"])

    def batch(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float]) -> tuple[np.ndarray, ...]:
        k, close = int(params["period"]), data["close"]
        out = np.full(len(close), np.nan)
        out[k:] = close[k:] - close[:-k]
        return (out,)

    def stream(self, params: Mapping[str, int | float]) -> IndicatorStream:
        return MomentumStream(int(params["period"]))


class MomentumStream(IndicatorStream):
    def __init__(self, period: int) -> None:
        self.period, self.closes = period, []  # type: list[float]

    def _at(self, closes: list[float]) -> tuple[float, ...]:
        return (closes[-1] - closes[-1 - self.period],) if len(closes) > self.period else (math.nan,)

    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        self.closes.append(bar["close"])
        return self._at(self.closes)

    def peek(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        return self._at([*self.closes, bar["close"]])


class PeekCommits(MomentumStream):
    def peek(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        return self.update(bar)


class Drifts(MomentumStream):
    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        return tuple(v * (1 + 1e-6) for v in super().update(bar))


class ChokesOnNaN(MomentumStream):
    def update(self, bar: Mapping[str, float]) -> tuple[float, ...]:
        if bar["close"] != bar["close"]:
            raise ValueError("a gap")
        return super().update(bar)


def _momentum(stream: type[MomentumStream] = MomentumStream, **attrs: Any) -> Indicator:
    cls = type("Faulty", (Momentum,), {"stream": lambda self, params: stream(int(params["period"])), **attrs})
    return cls()  # type: ignore[no-any-return]


def test_a_sound_indicator_passes() -> None:
    checks.indicators.check_indicator(Momentum())


@pytest.mark.parametrize(("indicator", "check", "says"), [
    pytest.param(_momentum(Drifts), checks.indicators.check_stream_equals_batch, "update vs batch", id="drift"),
    pytest.param(_momentum(PeekCommits), checks.indicators.check_stream_equals_batch, "peek then update",
                 id="peek-commits"),
    pytest.param(_momentum(ChokesOnNaN), checks.indicators.check_odd_bars, "raised ValueError: a gap", id="gap"),
    pytest.param(_momentum(lookback=lambda self, params: 5), checks.indicators.check_declaration,
                 "values before the declared lookback 5", id="lookback"),
    pytest.param(_momentum(resolve=lambda self, given: {"period": 3}), checks.indicators.check_bad_parameters,
                 "was accepted", id="params-unchecked"),
])
def test_a_faulty_indicator_is_named_with_its_fault(indicator: Indicator, check: Any, says: str) -> None:
    with pytest.raises(AssertionError, match=f"MOM_TEST.*{says}"):
        check(indicator)


# -- feature extractors -----------------------------------------------------------------------------------


class Range(FeatureExtractor):
    name = "range_test"
    inputs = ("high", "low")
    params = (Param("scale", float, 1.0, minimum=0.0),)

    def lookback(self, params: Mapping[str, int | float]) -> int:
        return 0

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, ...]:
        high, low = inputs
        return ((high - low) * params["scale"],)

    def stream(self, params: Mapping[str, int | float], registries: Mapping[str, Mapping[str, Any]]) -> MapStream:
        return MapStream(lambda h, lo: ((h - lo) * params["scale"],))


class RangeStreamRounds(Range):
    def stream(self, params: Mapping[str, int | float], registries: Mapping[str, Mapping[str, Any]]) -> MapStream:
        return MapStream(lambda h, lo: (round((h - lo) * params["scale"], 3),))


class RangeOverVolume(Range):
    inputs = ("high", "volume")

    def batch(self, inputs: Sequence[np.ndarray], params: Mapping[str, int | float],
              registries: Mapping[str, Mapping[str, Any]]) -> tuple[np.ndarray, ...]:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (inputs[0] / inputs[1],)

    def stream(self, params: Mapping[str, int | float], registries: Mapping[str, Mapping[str, Any]]) -> MapStream:
        return MapStream(lambda h, v: (h / v if v else math.inf,))


def test_a_sound_extractor_passes() -> None:
    checks.features.check_feature_extractor(Range(), {})


@pytest.mark.parametrize(("extractor", "says"), [
    pytest.param(RangeStreamRounds(), "streamed differs from batch", id="stream-differs"),
    pytest.param(RangeOverVolume(), "infinite on a series with gaps, flat bars and zero volume", id="infinite"),
])
def test_a_faulty_extractor_is_named_with_its_fault(extractor: FeatureExtractor, says: str) -> None:
    with pytest.raises(AssertionError, match=f"range_test.*{says}"):
        checks.features.check_feature_extractor(extractor, {})


# -- patterns ---------------------------------------------------------------------------------------------


class RisingClose(Pattern):
    """A close above the previous one after a close below the one before: confirmed at the second bar."""

    name = "TURN_UP_TEST"
    kind = "chart"
    inputs = ("close",)

    def detect(self, data: Mapping[str, np.ndarray], params: Mapping[str, int | float],
               ts: np.ndarray | None = None) -> list[PatternEvent]:
        c = data["close"]
        return [PatternEvent(self.name, self.kind, i, BULLISH, 1.0, None if ts is None else int(ts[i]))
                for i in range(2, len(c)) if c[i - 2] > c[i - 1] < c[i]]

    def stream(self, params: Mapping[str, int | float]) -> PatternStream:
        return RisingStream(self.name, 0)


class RisingStream(PatternStream):
    def __init__(self, name: str, late: int) -> None:
        self.name, self.late, self.closes = name, late, []  # type: str, int, list[float]

    def update(self, bar: Mapping[str, float]) -> list[PatternEvent]:
        self.closes.append(bar["close"])
        c, i = self.closes, len(self.closes) - 1
        hit = i >= 2 and c[i - 2] > c[i - 1] < c[i]
        return [PatternEvent(self.name, "chart", i + self.late, BULLISH, 1.0, bar.get("ts"))] if hit else []


class LateStream(RisingClose):
    def stream(self, params: Mapping[str, int | float]) -> PatternStream:
        return RisingStream(self.name, 1)


def test_a_sound_pattern_passes() -> None:
    checks.patterns.check_pattern(RisingClose())


def test_a_pattern_whose_stream_disagrees_with_batch_is_named() -> None:
    with pytest.raises(AssertionError, match=r"TURN_UP_TEST.*(first difference|ts is not the timestamp)"):
        checks.patterns.check_live_equals_batch(LateStream())


# -- model kinds ------------------------------------------------------------------------------------------


class LinearPredictor(Predictor):
    task = "regression"

    def __init__(self, weights: list[float], bias: float) -> None:
        self.weights, self.bias, self.n_features = np.asarray(weights), bias, len(weights)

    def predict(self, x: np.ndarray) -> Prediction:
        return Prediction(x @ self.weights + self.bias)


class LinearJson(ModelKind):
    """JSON ``{"weights": [...], "bias": b}``; offers its own example to the checks."""

    name = "linear_test"
    formats = ("json",)

    def check(self, data: bytes, fmt: str) -> Described:
        try:
            spec = json.loads(data)
            weights, bias = [float(w) for w in spec["weights"]], float(spec["bias"])
        except (ValueError, TypeError, KeyError) as exc:
            raise BadRequest(f"not a linear model: {exc}", field="artifact") from None
        if not weights:
            raise BadRequest("no weights", field="artifact")
        return Described("regression", len(weights), None, {"bias": bias})

    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> Predictor:
        spec = json.loads((directory / manifest["artifact"]).read_bytes())
        return LinearPredictor(spec["weights"], spec["bias"])

    def example(self) -> tuple[bytes, str]:
        return json.dumps({"weights": [1.0, -2.0, 0.5], "bias": 0.25}).encode(), "json"


class Unpickles(LinearJson):
    def check(self, data: bytes, fmt: str) -> Described:
        with contextlib.suppress(Exception):
            pickle.loads(data)  # what a kind must never do with an upload
        return super().check(data, fmt)


class LeaksValueError(LinearJson):
    def check(self, data: bytes, fmt: str) -> Described:
        spec = json.loads(data)  # a JSONDecodeError escapes
        return super().check(json.dumps(spec).encode(), fmt)


class WrongShape(LinearJson):
    def load(self, directory: Path, manifest: Mapping[str, Any], options: Mapping[str, Any]) -> Predictor:
        predictor = super().load(directory, manifest, options)
        predictor.predict = lambda x: Prediction(np.zeros(len(x) + 1))  # type: ignore[method-assign]
        return predictor


def test_a_sound_kind_makes_the_round_trip_with_its_own_example(tmp_path: Path) -> None:
    report = checks.models.check_model_kind(LinearJson(), tmp_path)
    assert report.round_trips == ["json: offered by the kind"] and report.garbage_formats == ["json"]
    assert report.notes == [] and report.paths_compared == []


@pytest.mark.parametrize(("kind", "says"), [
    pytest.param(Unpickles(), "EXECUTED the artifact", id="executes-uploads"),
    pytest.param(LeaksValueError(), r"raised \w+Error: .*; a refused artifact is a BadRequest", id="not-a-bad-request"),
    pytest.param(WrongShape(), r"values of shape \(201,\), not \(200,\)", id="wrong-shape"),
])
def test_a_faulty_kind_is_named_with_its_fault(kind: ModelKind, says: str, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=f"linear_test.*{says}"):
        checks.models.check_model_kind(kind, tmp_path)


# -- sentiment analysers --------------------------------------------------------------------------------


class Counts(TextAnalyzer):
    name = "counts_test"

    def score(self, texts: Sequence[str]) -> list[float]:
        return [math.tanh(t.count("up") - t.count("down")) for t in texts]


class Loud(Counts):
    def score(self, texts: Sequence[str]) -> list[float]:
        return [float(t.count("!")) for t in texts]


class Relative(Counts):
    def score(self, texts: Sequence[str]) -> list[float]:
        longest = max((len(t) for t in texts), default=1) or 1
        return [len(t) / longest for t in texts]


class LastMove(MarketAnalyzer):
    name = "last_move_test"

    def score(self, data: Mapping[str, np.ndarray]) -> dict[str, Any]:
        close = data["close"]
        if len(close) < 2:
            raise BadRequest("needs two bars", field="close")
        move = math.tanh((close[-1] - close[-2]) / close[-2] * 100)
        return {"score": move if move == move else 0.0, "components": {}, "weights": {}}


class DividesByRange(LastMove):
    def score(self, data: Mapping[str, np.ndarray]) -> dict[str, Any]:
        span = float(data["high"][-1] - data["low"][-1])
        return {"score": math.tanh(1 / span), "components": {}, "weights": {}}  # raises on a flat bar


def test_sound_analyzers_pass() -> None:
    checks.sentiment.check_sentiment_analyzer(Counts())
    checks.sentiment.check_sentiment_analyzer(LastMove())


@pytest.mark.parametrize(("analyzer", "says"), [
    pytest.param(Loud(), r"not a finite number in \[-1, 1\]", id="out-of-range"),
    pytest.param(Relative(), "alone, .* in a batch", id="depends-on-the-batch"),
    pytest.param(DividesByRange(), "raised ZeroDivisionError", id="flat-bars"),
])
def test_a_faulty_analyzer_is_named_with_its_fault(analyzer: Any, says: str) -> None:
    with pytest.raises(AssertionError, match=f"_test.*{says}"):
        checks.sentiment.check_sentiment_analyzer(analyzer)


# -- actors ---------------------------------------------------------------------------------------------


ACTORS = '''
from ml_processing.sdk import Actor, Args, NoArgs, hookimpl, op


class LookupArgs(Args):
    key: str


class Lookup(Actor):
    name = "lookup_test"

    @op(LookupArgs, reply=str, role="read")
    def handle_get(self, args: LookupArgs) -> str:
        "The value of a key."
        return {"a": "1"}.get(args.key, "")


class Fragile(Actor):
    name = "fragile_test"

    @op(NoArgs, reply=str, role="read")
    def handle_first(self, args: NoArgs) -> str:
        "Fails on every request: a bug the caller did not cause."
        return [][0]


class LenientArgs(Args, forbid_unknown_fields=False):
    key: str = "a"


class Lenient(Actor):
    name = "lenient_test"

    @op(LenientArgs, reply=str, role="read")
    def handle_get(self, args: LenientArgs) -> str:
        "The value of a key (unknown fields silently dropped: garbage accepted)."
        return args.key


class Undeclared(Lookup):
    def handle_put(self, args):
        pass


class NoReply(Lookup):
    @op(LookupArgs, role="admin")
    def handle_drop(self, args: LookupArgs) -> None:
        "Drop a key."


@hookimpl
def register_actors(settings):
    return [Lookup, Fragile, Lenient]
'''


@pytest.fixture
def actors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    with plugin_module(monkeypatch, tmp_path / "site", "mlp_actors_test", ACTORS):
        yield importlib.import_module("mlp_actors_test")


def test_a_declared_actor_passes(actors: ModuleType) -> None:
    checks.actors.check_actor_declarations(actors.Lookup)


@pytest.mark.parametrize(("actor", "says"), [
    pytest.param("Undeclared", "op 'put' is not declared", id="undeclared"),
    pytest.param("NoReply", r"op 'drop': no reply type", id="no-reply"),
])
def test_an_undeclared_op_is_named(actors: ModuleType, actor: str, says: str) -> None:
    with pytest.raises(AssertionError, match=says):
        checks.actors.check_actor_declarations(getattr(actors, actor))


async def test_an_op_failing_on_or_taking_garbage_is_named_and_a_sound_one_passes(actors: ModuleType, tmp_path: Path) -> None:
    async with running(checks.local_config(tmp_path, modules=("mlp_actors_test",), autoload=False)) as kernel:
        await checks.actors.check_actor_answers(kernel, "lookup_test")
        with pytest.raises(AssertionError, match=r"fragile_test.*first\(an empty map\): internal error"):
            await checks.actors.check_actor_answers(kernel, "fragile_test")
        with pytest.raises(AssertionError, match=r"lenient_test.*get\(an unknown field\): answered with a result"):
            await checks.actors.check_actor_answers(kernel, "lenient_test")
