"""The arguments and replies of every op of the ``models`` service, declared once.

The kernel checks each request against its op's `Args` before a handler runs (REST, MDP and the in-process
bus alike) and builds the OpenAPI document and docs' tables from the same types; the handlers receive
these structures, typed and validated. Replies are `TypedDict`s wherever their shape is fixed.

>>> from ml_processing.sdk.services import features  # noqa: F401  (the SDK's types are registered)
>>> from ml_processing.core.ops import convert
>>> convert({"model_id": "trend", "kind": "xgboost", "artifact": "AAE="}, RegisterArgs).artifact
b'\\x00\\x01'
>>> convert({"model_id": "trend", "kind": {"x": 1}, "artifact": "AAE="}, RegisterArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: kind: Expected `str`, got `object`
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, TypedDict

import msgspec
import numpy as np

from ml_processing.sdk import Args, Columns, Int64, NoArgs, PositiveInt, Symbol, Timeframe
from ml_processing.sdk.model import FeatureRow, FeatureRows

__all__ = [
    "BackfillArgs", "BackfillSeries", "Cancelled", "DatasetList", "DeleteArgs", "Deleted", "JobArgs", "JobInfo", "JobList", "KindInfo", "LearnArgs", "Learned",
    "ModelArgs", "ModelDetails", "ModelList", "ModelName", "ModelSummary", "NoArgs", "PredictArgs", "PredictBatchArgs",
    "Predicted", "PredictedBatch", "PromoteArgs", "RegisterArgs", "Registered", "V2InferArgs", "V2Live", "V2Metadata",
    "V2ModelArgs", "V2ModelReady", "V2Raw", "V2Ready", "V2Server", "V2VersionArgs", "V2VersionInferArgs", "Weights",
]

#: A model's name: what its folder on disk is called.
ModelName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                                        description="1-64 letters, digits, '_' or '-'")]
#: A model named in a request (unknown names answer 404).
ModelRef = Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="a model name")]
#: A registered model kind (GET /api/v1/model-kinds lists them).
KindName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="a registered model kind")]
FeatureName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
PipelineVersion = Annotated[str, msgspec.Meta(pattern=r"^[^@]{1,100}@[0-9]{1,9}$",
                                              description="NAME@VERSION of a feature pipeline")]
#: A value in a map of simple values (metrics).
Simple = int | float | str | bool | None


# -- registry -----------------------------------------------------------------------------------------------


class ModelArgs(Args):
    """One model."""

    model_id: ModelName


class RegisterArgs(Args):
    """A new version from an uploaded artifact."""

    model_id: ModelName
    kind: KindName
    artifact: Annotated[bytes, msgspec.Meta(min_length=1, description="the model file: base64 in JSON, bytes in "
                                                                      "msgpack")]
    format: Annotated[str, msgspec.Meta(max_length=32)] | None = None  # default: the kind's first format
    features: list[FeatureName] | None = None  # the feature names, in order
    pipeline: PipelineVersion | None = None  # or the feature pipeline the version is bound to
    metrics: dict[str, Simple] = {}
    promote: bool | None = None  # default: promoted when the model has no current version


class PromoteArgs(Args):
    """Make a version the current one."""

    model_id: ModelName
    version: PositiveInt


class DeleteArgs(Args):
    """Delete one version (the current one only with ``force``)."""

    model_id: ModelName
    version: PositiveInt
    force: bool = False


class KindInfo(TypedDict):
    name: str
    formats: list[str]
    doc: str


class _Serving(TypedDict):
    """What every model entry says; the rest is there while a version is loaded."""

    model: str
    current: int | None  # the version the pointer names
    version: int | None  # the version serving (the current one, or an earlier one if it was refused)
    serving: int | None
    status: Literal["ok", "degraded", "unavailable"]
    kind: NotRequired[str]
    format: NotRequired[str]
    task: NotRequired[str]
    classes: NotRequired[list[Any] | None]
    n_features: NotRequired[int]
    features: NotRequired[list[str] | None]
    pipeline: NotRequired[str | None]
    metrics: NotRequired[dict[str, Any]]
    details: NotRequired[dict[str, Any]]
    created: NotRequired[str]
    load_ms: NotRequired[float]
    paths: NotRequired[list[str]]
    refused: NotRequired[dict[str, str]]  # version -> why it does not load


class ModelSummary(_Serving):
    versions: list[int]
    live: NotRequired[dict[str, Any]]  # /health: the prequential scores of a model that was labelled


class ModelList(TypedDict):
    models: list[ModelSummary]


class VersionInfo(TypedDict):
    version: int
    status: Literal["ok", "refused"]
    kind: NotRequired[str]
    created: NotRequired[str]
    metrics: NotRequired[dict[str, Any]]
    pipeline: NotRequired[str | None]
    files: NotRequired[dict[str, str]]
    reason: NotRequired[str]


class ModelDetails(_Serving):
    versions: list[VersionInfo]
    history: list[int]  # earlier current versions, newest last


class Registered(TypedDict):
    model: str
    version: int
    kind: str
    format: str
    task: str
    classes: list[Any] | None
    n_features: int
    features: list[str] | None
    pipeline: str | None
    metrics: dict[str, Any]
    details: dict[str, Any]
    created: str
    load_ms: float
    paths: list[str]
    current: int | None
    promoted: bool


class Deleted(TypedDict):
    model: str
    deleted: int
    versions: list[int]


# -- inference ----------------------------------------------------------------------------------------------


class PredictArgs(Args):
    """One row: ``features`` (a list in the model's order, or a map of name -> value), or ``bars`` (OHLCV
    columns, for a model bound to a feature pipeline: its row of the last bar)."""

    model: ModelRef
    features: FeatureRow | None = None
    bars: Columns | None = None  # OHLCV columns
    version: PositiveInt | None = None


class PredictBatchArgs(Args):
    """Rows of features, in the model's feature order."""

    model: ModelRef
    rows: FeatureRows
    version: PositiveInt | None = None


class Predicted(TypedDict):
    model: str
    version: int
    prediction: Any  # a class label or a number
    probabilities: list[float] | None  # in the order of `classes`
    classes: list[Any] | None
    path: str  # onnx, native, or both (an ensemble)
    latency_us: float
    cached: bool
    features: NotRequired[list[str]]  # with bars: the pipeline's feature names
    row: NotRequired[np.ndarray]  # with bars: the row predicted


class PredictedBatch(TypedDict):
    model: str
    version: int
    rows: int
    predictions: list[Any]  # class labels or numbers, one per row (an ndarray over msgpack)
    probabilities: list[list[float]] | None  # rows x classes (an ndarray over msgpack)
    classes: list[Any] | None
    path: str
    latency_us: float


# -- Open Inference Protocol (KServe V2) --------------------------------------------------------------------


class V2ModelArgs(Args):
    name: str


class V2VersionArgs(V2ModelArgs):
    version: PositiveInt


class V2InferArgs(Args):
    """A raw route: the request body as it came, its content type and headers (lowercase names)."""

    name: str
    body: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = {}


class V2VersionInferArgs(V2InferArgs, kw_only=True):
    version: str  # the protocol's version is a string: a bad one answers the protocol's error


class V2Server(TypedDict):
    name: str
    version: str
    extensions: list[str]


class V2Ready(TypedDict):
    ready: bool


class V2Live(TypedDict):
    live: bool


class V2Tensor(TypedDict):
    name: str
    datatype: str
    shape: list[int]


class V2Metadata(TypedDict):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2Tensor]
    outputs: list[V2Tensor]


class V2ModelReady(TypedDict):
    name: str
    version: str
    ready: bool


class V2Raw(TypedDict):
    """A raw route's answer: sent as it is (``status`` 200 unless given)."""

    body: bytes
    content_type: str
    headers: NotRequired[dict[str, str]]
    status: NotRequired[int]


# -- training -----------------------------------------------------------------------------------------------


class JobArgs(Args):
    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class JobInfo(TypedDict):
    id: str
    model: str
    kind: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: str
    created: float
    finished: float | None
    result: dict[str, Any] | None
    error: str | None


class Executor(TypedDict):
    """Where jobs run: ``local`` (the process pool) or ``dask`` (a scheduler's address, connected or not)."""

    executor: Literal["local", "dask"]
    workers: NotRequired[int]
    address: NotRequired[str]
    connected: NotRequired[bool]
    error: NotRequired[str | None]


class JobList(TypedDict):
    jobs: list[JobInfo]
    active: int
    executor: Executor


class Cancelled(JobInfo):
    cancelled: bool


# -- backfills and datasets ---------------------------------------------------------------------------------

#: A dataset's name: what its folder on disk is called.
DatasetName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                                          description="1-64 letters, digits, '_' or '-'")]
#: A dataset in a training request: NAME (its newest version) or NAME@VERSION.
DatasetRef = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}(@[0-9]{1,9})?$",
                                         description="a dataset: NAME (its newest version) or NAME@VERSION")]
PipelineRef = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}(@[0-9]{1,9})?$",
                                          description="a feature pipeline: NAME (its newest version) or "
                                                      "NAME@VERSION")]


class BackfillSeries(Columns, kw_only=True):
    """One series of a backfill: its bars as columns (``ts`` and ``close`` among them), or none to take the
    bars the ``indicators`` service holds for ``symbol`` and ``timeframe``."""

    max_values = 10_000_000

    symbol: Symbol
    timeframe: Timeframe

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.length and self.ts is None:
            raise ValueError("ts: a dataset orders rows by bar time: send the 'ts' column")
        if self.length and self.close is None:
            raise ValueError("close: training labels need the 'close' column")


class BackfillArgs(Args):
    """Compute the feature rows of `pipeline` for every series and store them as a new version of `dataset`."""

    dataset: DatasetName
    series: Annotated[list[BackfillSeries], msgspec.Meta(min_length=1, max_length=10_000)]
    pipeline: PipelineRef = "default"

    def __post_init__(self) -> None:
        seen: set[tuple[str, str]] = set()
        for i, item in enumerate(self.series):
            if (item.symbol, item.timeframe) in seen:
                raise ValueError(f"series[{i}]: {item.symbol} {item.timeframe} is already in the backfill")
            seen.add((item.symbol, item.timeframe))


class DatasetSeries(TypedDict):
    symbol: str
    timeframe: str
    bars: int
    rows: int
    first_ts: int | None
    last_ts: int | None


class DatasetInfo(TypedDict):
    name: str
    versions: list[int]
    latest: int
    pipeline: str  # NAME@VERSION of the feature pipeline the rows are from
    features: list[str]
    created: str
    rows: int
    series: list[DatasetSeries]


class DatasetList(TypedDict):
    datasets: list[DatasetInfo]


# -- live learning ------------------------------------------------------------------------------------------


class LearnArgs(Args):
    """A label: for ``features`` (a row: test then train), or for the live prediction of ``symbol``,
    ``timeframe`` and ``ts``."""

    model: ModelRef
    label: int | float | str
    features: FeatureRow | None = None
    symbol: Symbol | None = None
    timeframe: Timeframe | None = None
    ts: Int64 | None = None


class MemberLabelArgs(LearnArgs):
    """A label joined by the process owning its symbol, with the row of the labelled prediction."""

    features: FeatureRow


class Learned(TypedDict):
    model: str
    learned: bool  # False: no live prediction waited for that label
    scores: dict[str, Any] | None


class Weights(TypedDict):
    model: str
    members: list[str]
    weights: list[float]
    eta: float
    floor: float
    updates: int
