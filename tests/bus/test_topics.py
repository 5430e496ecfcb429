"""Topic strings: builders, parsing, subscription prefixes, and rejection of invalid parts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ml_processing.bus import topics
from ml_processing.bus.errors import BadRequest

BUILDERS: list[tuple[Callable[..., str], tuple[str, ...], str]] = [
    (topics.bar, ("AAPL", "1m"), "bar.AAPL.1m"),
    (topics.tick, ("BTC-USD",), "tick.BTC-USD"),
    (topics.label, ("ES:CME",), "label.ES:CME"),
    (topics.news, ("MSFT",), "news.MSFT"),
    (topics.indicator, ("EURUSD", "5m"), "indicator.EURUSD.5m"),
    (topics.pattern, ("BRK/B", "1d"), "pattern.BRK/B.1d"),
    (topics.signal, ("^GSPC",), "signal.^GSPC"),
    (topics.prediction, ("EUR=X",), "prediction.EUR=X"),
    (topics.sentiment, ("$SPX",), "sentiment.$SPX"),
    (topics.model, ("drift",), "model.drift"),
    (topics.kernel, ("actor",), "kernel.actor"),
]


@pytest.mark.parametrize(("builder", "args", "expected"), BUILDERS, ids=[b[2] for b in BUILDERS])
def test_builder_output(builder: Callable[..., str], args: tuple[str, ...], expected: str) -> None:
    assert builder(*args) == expected


@pytest.mark.parametrize(("builder", "args", "expected"), BUILDERS, ids=[b[2] for b in BUILDERS])
def test_parse_inverts_every_builder(builder: Callable[..., str], args: tuple[str, ...], expected: str) -> None:
    kind = expected.split(".", 1)[0]

    parsed = topics.parse(builder(*args))

    assert parsed.kind == kind
    assert (parsed.symbol, parsed.timeframe) == (args[0], args[1] if len(args) > 1 else None)
    assert topics.build(*parsed) == expected


def test_build_of_a_kind_alone() -> None:
    assert topics.build(topics.BAR) == "bar"
    assert topics.parse("bar") == topics.Topic("bar", None, None)


def test_kinds_are_lowercase_and_dot_free() -> None:
    assert topics.KINDS >= {"bar", "tick", "label", "indicator", "pattern", "signal", "prediction", "model"}
    assert all(kind == kind.lower() and "." not in kind for kind in topics.KINDS)


def test_symbol_of_64_characters_and_every_allowed_special_character() -> None:
    longest = "A" * 64
    special = "a_b-c/d:e+f^g=h$i0"

    assert topics.bar(longest, "1m") == f"bar.{longest}.1m"
    assert topics.parse(topics.tick(special)).symbol == special


# -- prefixes -------------------------------------------------------------------------------------------


def test_symbol_prefix_matches_every_timeframe_of_that_symbol_only() -> None:
    prefix = topics.prefix(topics.BAR, "AAPL")

    assert prefix == "bar.AAPL."
    assert topics.bar("AAPL", "1m").startswith(prefix)
    assert topics.bar("AAPL", "1d").startswith(prefix)
    assert not topics.bar("AAPLX", "1m").startswith(prefix)
    assert not topics.bar("AAP", "1m").startswith(prefix)
    assert not topics.indicator("AAPL", "1m").startswith(prefix)


def test_kind_prefix_matches_every_symbol_of_that_kind_only() -> None:
    prefix = topics.prefix(topics.TICK)

    assert prefix == "tick."
    assert topics.tick("AAPL").startswith(prefix)
    assert topics.tick("BTC-USD").startswith(prefix)
    assert not topics.bar("AAPL", "1m").startswith(prefix)


def test_prefix_of_one_kind_never_matches_a_kind_it_starts() -> None:
    # "model." must not match "models..." style kinds; every kind's prefix matches only its own topics
    for kind in topics.KINDS:
        for other in topics.KINDS - {kind}:
            assert not topics.build(other, "X").startswith(topics.prefix(kind))


def test_prefix_rejects_what_build_rejects() -> None:
    with pytest.raises(BadRequest) as caught:
        topics.prefix(topics.BAR, "A.B")
    assert caught.value.field == "symbol"


# -- invalid parts ---------------------------------------------------------------------------------------

INVALID_PARTS: list[Any] = ["", "A.B", "A B", "A*", "A#", "x" * 65, "ÄPPLE", "A\tB", "A\x00", ".", 7]


@pytest.mark.parametrize("symbol", INVALID_PARTS, ids=repr)
def test_invalid_symbol_rejected_naming_the_field(symbol: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        topics.bar(symbol, "1m")

    assert caught.value.field == "symbol"
    assert caught.value.code == "bad_request"
    assert repr(symbol) in caught.value.message


@pytest.mark.parametrize("timeframe", INVALID_PARTS, ids=repr)
def test_invalid_timeframe_rejected_naming_the_field(timeframe: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        topics.indicator("AAPL", timeframe)

    assert caught.value.field == "timeframe"
    assert repr(timeframe) in caught.value.message


@pytest.mark.parametrize("kind", ["bars", "BAR", "", "bar.x", "unknown"])
def test_unknown_kind_rejected_naming_the_field(kind: str) -> None:
    with pytest.raises(BadRequest) as caught:
        topics.build(kind, "AAPL")

    assert caught.value.field == "kind"


@pytest.mark.parametrize(("topic", "field"), [
    ("", "topic"),
    ("unknown.AAPL", "topic"),
    ("BAR.AAPL.1m", "topic"),
    ("bar.AAPL.1m.extra", "topic"),
    ("bar..1m", "symbol"),
    ("bar.", "symbol"),
    ("bar.A B.1m", "symbol"),
    ("bar.AAPL.", "timeframe"),
    ("bar.AAPL.1 m", "timeframe"),
])
def test_parse_rejects_malformed_topics_naming_the_field(topic: str, field: str) -> None:
    with pytest.raises(BadRequest) as caught:
        topics.parse(topic)

    assert caught.value.field == field


@pytest.mark.parametrize("call", [
    lambda: topics.bar("AAPL\n", "1m"),
    lambda: topics.bar("AAPL", "1m\n"),
    lambda: topics.parse("bar.AAPL.1m\n"),
], ids=["symbol", "timeframe", "parse"])
def test_trailing_newline_is_rejected(call: Callable[[], Any]) -> None:
    with pytest.raises(BadRequest):
        call()


@pytest.mark.parametrize("call", [
    lambda: topics.build(topics.BAR, None, "1m"),
    lambda: topics.bar(None, "1m"),
    lambda: topics.indicator(None, "5m"),
], ids=["build", "bar", "indicator"])
def test_timeframe_without_symbol_is_rejected(call: Callable[[], Any]) -> None:
    with pytest.raises(BadRequest) as caught:
        call()
    assert caught.value.field == "symbol"
