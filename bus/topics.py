"""Every pub/sub topic string of ml-processing is built and parsed here; none is written inline elsewhere.

Topics are dotted, lowercase kind first, general to specific: ``kind.SYMBOL[.TIMEFRAME]``. A subscription
is a byte prefix (ZeroMQ semantics), so `prefix` ends a partial topic with a dot: ``bar.AAPL.`` matches
every timeframe of AAPL and never ``bar.AAPLX.1m``. Symbols may not contain dots.

>>> bar("AAPL", "1m")
'bar.AAPL.1m'
>>> parse("indicator.BTC-USD.5m")
Topic(kind='indicator', symbol='BTC-USD', timeframe='5m')
>>> prefix(BAR, "AAPL")
'bar.AAPL.'
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from .errors import BadRequest

# Inbound: market data and labels from feeds and engines.
BAR = "bar"
TICK = "tick"
LABEL = "label"
NEWS = "news"
# Outbound: what the service computes.
INDICATOR = "indicator"
FEATURE = "feature"
PATTERN = "pattern"
SIGNAL = "signal"
PREDICTION = "prediction"
SENTIMENT = "sentiment"
MODEL = "model"
# The kernel's own events (actor lifecycle).
KERNEL = "kernel"

KINDS = frozenset({BAR, TICK, LABEL, NEWS, INDICATOR, FEATURE, PATTERN, SIGNAL, PREDICTION, SENTIMENT, MODEL, KERNEL})

_PART = re.compile(r"^[A-Za-z0-9_\-/:+^=$]{1,64}$")


class Topic(NamedTuple):
    kind: str
    symbol: str | None
    timeframe: str | None


def _checked(part: str, what: str) -> str:
    if not isinstance(part, str) or not _PART.fullmatch(part):
        raise BadRequest(f"invalid {what} {part!r}: 1-64 characters of letters, digits and _-/:+^=$",
                         field=what)
    return part


@lru_cache(maxsize=65536)
def build(kind: str, symbol: str | None = None, timeframe: str | None = None) -> str:
    """Build a topic; raises `BadRequest` naming the bad part. Valid topics are cached."""
    if kind not in KINDS:
        raise BadRequest(f"unknown topic kind {kind!r}", field="kind")
    if symbol is None:
        if timeframe is not None:
            raise BadRequest(f"a timeframe ({timeframe!r}) needs a symbol", field="symbol")
        return kind
    topic = f"{kind}.{_checked(symbol, 'symbol')}"
    if timeframe is not None:
        topic += "." + _checked(timeframe, "timeframe")
    return topic


def prefix(kind: str, symbol: str | None = None) -> str:
    """A subscription prefix: every topic of `kind` (and of `symbol`, when given)."""
    return build(kind, symbol) + "."


def parse(topic: str) -> Topic:
    """The parts of a topic; raises `BadRequest` naming the bad part. Valid topics are cached (a feed
    repeats a small set of them on every message), invalid ones never are."""
    if not isinstance(topic, str):
        raise BadRequest(f"a topic is a string, got {type(topic).__name__}", field="topic")
    return _parse(topic)


@lru_cache(maxsize=65536)
def _parse(topic: str) -> Topic:
    parts = topic.split(".")
    if not 1 <= len(parts) <= 3 or parts[0] not in KINDS:
        raise BadRequest(f"malformed topic {topic!r}", field="topic")
    symbol = _checked(parts[1], "symbol") if len(parts) > 1 else None
    timeframe = _checked(parts[2], "timeframe") if len(parts) > 2 else None
    return Topic(parts[0], symbol, timeframe)


def bar(symbol: str, timeframe: str) -> str:
    return build(BAR, symbol, timeframe)


def tick(symbol: str) -> str:
    return build(TICK, symbol)


def label(symbol: str) -> str:
    return build(LABEL, symbol)


def news(symbol: str) -> str:
    return build(NEWS, symbol)


def indicator(symbol: str, timeframe: str) -> str:
    return build(INDICATOR, symbol, timeframe)


def feature(symbol: str, timeframe: str) -> str:
    return build(FEATURE, symbol, timeframe)


def pattern(symbol: str, timeframe: str) -> str:
    return build(PATTERN, symbol, timeframe)


def signal(symbol: str) -> str:
    return build(SIGNAL, symbol)


def prediction(symbol: str) -> str:
    return build(PREDICTION, symbol)


def sentiment(symbol: str) -> str:
    return build(SENTIMENT, symbol)


def model(event: str) -> str:
    """Model events, e.g. ``model.drift``."""
    return build(MODEL, event)


def kernel(event: str) -> str:
    """Kernel events, e.g. ``kernel.actor`` (an actor changed state)."""
    return build(KERNEL, event)
