"""The ``models`` service as other plugins and commands call it: the live report.

The models plugin declares its ``live`` op with `LiveArgs` and `LiveReport`; the replay command reads the
report through `Models.live`.

>>> from ml_processing.core.ops import convert
>>> LiveArgs().timelines, convert({"timelines": True}, LiveArgs).timelines
(False, True)
>>> convert({"timelines": "yes"}, LiveArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: timelines: Expected `bool`, got `str`
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from ml_processing.core.ops import Args

from ._client import ServiceClient

SERVICE = "models"


class LiveArgs(Args):
    """What the live report holds: ``timelines`` adds rolling accuracy and ensemble weights over time."""

    timelines: bool = False


class Score(TypedDict):
    """Prequential figures of one model: each prediction scored on its label before learning from it."""

    labels: int
    accuracy: float
    rolling_accuracy: float  # over the last ``window`` labels
    window: int
    log_loss: float | None  # None before the first label
    drifts: int


class Weights(TypedDict):
    """An ensemble's adaptive member weights (the Hedge update with a floor)."""

    members: list[str]
    weights: list[float]
    eta: float
    floor: float
    updates: int


class Drift(TypedDict):
    """The last drift detected on a model's error stream."""

    model: str
    labels: int
    rolling_accuracy: float
    ts: int
    retrain_job: NotRequired[str]  # the retraining it started, when one is configured


class Attached(TypedDict):
    """A model attached to the live bars (``[plugins.models] live``)."""

    model: str
    timeframe: str | None  # None: every timeframe the features service publishes
    horizon: int  # self-labelling: the direction of the close this many bars later (0: labels from outside)
    buy_above: float
    sell_below: float
    retrain: dict[str, Any] | None  # a training request started when the model drifts


class Timelines(TypedDict):
    """Sampled every 50 labels (accuracy) or updates (weights), the last 2,000 samples."""

    accuracy: dict[str, list[tuple[int, float]]]  # model -> [(labels, rolling accuracy)]
    weights: dict[str, list[tuple[int, list[float]]]]  # ensemble -> [(updates, member weights)]


class LiveReport(TypedDict):
    """Live predictions, signals, labels, prequential scores, ensemble weights and drift."""

    counts: dict[str, int]  # predictions, signals, labels, unmatched_labels, skipped_rows, drifts, retrains
    scores: dict[str, Score]
    weights: dict[str, Weights]
    drift: dict[str, Drift]
    attached: list[Attached]
    timelines: NotRequired[Timelines]  # with ``timelines: true``


class Models(ServiceClient):
    service = SERVICE

    async def live(self, timelines: bool = False) -> LiveReport:
        """The live report; with `timelines`, accuracy and weights over time too."""
        result: LiveReport = await self.call("live", LiveArgs(timelines=timelines))
        return result
