"""The ``features`` service as other plugins call it: pipelines, fitting, extraction and transformation.

The `Args` and reply types here are the declarations of those ops: the ``features`` plugin serves them
with these very types, and `Features` calls them. A pipeline is named ``NAME`` (its latest version) or
``NAME@VERSION``; the ops that compute take OHLCV columns (`ml_processing.sdk.columns.Columns`, read
once, the same way as every op that takes bars) and either a saved pipeline or inline ``steps``.

>>> from ml_processing.core.ops import convert
>>> convert({"pipeline": "default@2", "close": [1.0, 2.0]}, ExtractArgs).pipeline
'default@2'
>>> convert({"steps": [{"feature": "lag"}], "nan": "keep", "close": [1.0]}, ExtractArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: nan: expected one of drop, fill, reject, got 'keep'
>>> convert({"pipeline": "mine", "rows": [[0.5, 1.0], [0.2, True]]}, TransformArgs)
Traceback (most recent call last):
...
ml_processing.bus.errors.BadRequest: rows[1]: value 1: expected a number, got bool
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypedDict

import msgspec
import numpy as np

from ml_processing.core.ops import Args, PositiveInt, register_type

from ..columns import Columns
from ._client import ServiceClient

__all__ = [
    "MAX_STEPS",
    "NAN_POLICIES",
    "SERVICE",
    "CreateArgs",
    "DeleteArgs",
    "DeleteReply",
    "ExtractArgs",
    "ExtractReply",
    "Features",
    "FitArgs",
    "FitReply",
    "Matrix",
    "PipelineInfo",
    "PipelineRequest",
    "PipelinesArgs",
    "PipelinesReply",
    "TransformArgs",
    "TransformReply",
    "VersionInfo",
    "VersionReply",
    "read_matrix",
]

SERVICE = "features"

#: Steps in one pipeline, at most.
MAX_STEPS = 256
#: What a pipeline does with a row that lacks a value, after its transforms.
NAN_POLICIES = ("drop", "fill", "reject")

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                                   description="a pipeline name: 1-64 letters, digits, '_' or '-'")]
Ref = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}(@[0-9]{1,9})?$",
                                  description="a pipeline: NAME (its latest version) or NAME@VERSION")]
#: Pipeline steps, checked step by step by the service's pipeline compiler (docs/FEATURES.md).
Steps = Annotated[list[dict[str, Any]], msgspec.Meta(
    min_length=1, max_length=MAX_STEPS,
    description="extract and transform steps, e.g. {\"indicator\": \"RSI\", \"params\": {\"timeperiod\": 14}}")]
NanPolicy = Annotated[str, msgspec.Meta(extra_json_schema={"enum": list(NAN_POLICIES)},
                                        description="drop, fill or reject rows without a value")]
Fill = Annotated[float, msgspec.Meta(description="a finite number: a missing feature's value under nan = fill")]
Description = Annotated[str, msgspec.Meta(max_length=1000)]


def check_policy(nan: str | None, fill: float | None) -> None:
    """`ValueError` naming ``nan`` unless it is one of `NAN_POLICIES`, or ``fill`` unless it is finite."""
    if nan is not None and nan not in NAN_POLICIES:
        raise ValueError(f"nan: expected one of {', '.join(NAN_POLICIES)}, got {nan!r:.40}")
    if fill is not None and not math.isfinite(fill):
        raise ValueError(f"fill: expected a finite number, got {fill}")


# -- feature rows ---------------------------------------------------------------------------------------


class Matrix(np.ndarray):
    """Rows x features of float64, NaN for a missing value: the type of feature rows in declarations.

    Arrives as a list of rows of numbers (``null`` for missing; a flat list is one row) or, in msgpack, a
    2-D numeric ndarray; the handler gets a 2-D float64 ndarray of this class (``np.asarray`` of it is
    a plain ndarray)."""


def read_matrix(value: Any) -> np.ndarray:
    """Feature rows as 2-D float64 (null -> NaN); `ValueError` naming the bad row (``[3]: ...``).

    >>> np.asarray(read_matrix([[1, None], [2.5, 3]]))
    array([[1. , nan],
           [2.5, 3. ]])
    >>> read_matrix([1.0, 2.0]).shape
    (1, 2)
    >>> read_matrix([[1.0, 2.0], [3.0]])
    Traceback (most recent call last):
    ...
    ValueError: [1]: has 1 values, row 0 has 2
    """
    if isinstance(value, np.ndarray):
        if value.ndim not in (1, 2) or value.dtype.kind not in "iuf":
            raise ValueError(f"expected a 2-D numeric array (rows x features), got {value.ndim}-D {value.dtype}")
        matrix = np.asarray(value, dtype=np.float64)
    elif isinstance(value, list):
        flat = bool(value) and not isinstance(value[0], list)
        try:
            rows = msgspec.convert(value, list[float | None] if flat else list[list[float | None]], strict=True)
        except msgspec.ValidationError as exc:
            text = str(exc)
            message, _, where = text.partition(" - at `$")
            indexes = where.rstrip("`").strip("[]").split("][")
            got = message.rsplit("got ", 1)[-1].strip("`")
            if flat:
                raise ValueError(f"[0]: value {indexes[0]}: expected a number, got {got}") from None
            if len(indexes) == 1:
                raise ValueError(f"[{indexes[0]}]: expected a row (a list of numbers), got {got}") from None
            raise ValueError(f"[{indexes[0]}]: value {indexes[1]}: expected a number, got {got}") from None
        if flat:
            rows = [rows]
        width = len(rows[0]) if rows else 0
        ragged = next((i for i, row in enumerate(rows) if len(row) != width), None)
        if ragged is not None:
            raise ValueError(f"[{ragged}]: has {len(rows[ragged])} values, row 0 has {width}")
        matrix = np.array(rows, dtype=np.float64).reshape(len(rows), width)
    else:
        raise ValueError(f"expected a list of rows of numbers, got {type(value).__name__}")
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if len(matrix) == 0:
        raise ValueError("needs at least one row")
    infinite = np.argwhere(np.isinf(matrix))
    if len(infinite):
        row, col = (int(i) for i in infinite[0])
        raise ValueError(f"[{row}]: value {col}: expected a finite number, got {matrix[row, col]}")
    return matrix.view(Matrix)  # the declared type (msgspec checks it); np.asarray() is the plain array


register_type(Matrix, read_matrix, {
    "type": "array", "items": {"type": "array", "items": {"type": ["number", "null"]}},
    "description": "rows of numbers (null for a missing value); or, in msgpack, a 2-D ndarray (docs/PROTOCOL.md)"})


# -- arguments ------------------------------------------------------------------------------------------


class PipelinesArgs(Args):
    """One pipeline (NAME or NAME@VERSION: all of its versions), or all."""

    pipeline: Ref | None = None


class PipelineRequest(Columns, kw_only=True):
    """OHLCV columns and which pipeline runs on them: ``pipeline`` (NAME or NAME@VERSION, with ``version``
    optional), or inline ``steps`` (with ``nan`` and ``fill``) used once and never saved."""

    #: Values per column, at most; the service's ``max_rows`` may be lower.
    max_values = 10_000_000

    pipeline: Ref | None = None
    version: PositiveInt | None = None
    steps: Steps | None = None
    nan: NanPolicy | None = None
    fill: Fill | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_policy(self.nan, self.fill)
        if self.steps is None:
            if self.pipeline is None:
                raise ValueError("pipeline: is required (NAME or NAME@VERSION), or inline 'steps'")
            for name in ("nan", "fill"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: goes with inline 'steps'; a saved pipeline has its own")
        elif self.pipeline is not None or self.version is not None:
            raise ValueError("steps: send a saved 'pipeline' or inline 'steps', not both")
        if self.version is not None and self.pipeline is not None and "@" in self.pipeline:
            raise ValueError("version: the pipeline already names its version (NAME@VERSION)")


class ExtractArgs(PipelineRequest, kw_only=True):
    """OHLCV columns -> the pipeline's feature matrix; ``transform`` applies its fitted transforms too."""

    transform: bool = False


class TransformArgs(PipelineRequest, kw_only=True):
    """Feature ``rows`` (or OHLCV columns) -> transformed rows under the pipeline's NaN policy."""

    rows: Matrix | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rows is not None and self.length:
            raise ValueError("rows: send feature rows or OHLCV columns, not both")


class FitArgs(Columns, kw_only=True):
    """A saved pipeline and what to fit its transforms on: OHLCV columns, or feature ``rows``."""

    max_values = 10_000_000

    pipeline: Ref
    version: PositiveInt | None = None
    rows: Matrix | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rows is not None and self.length:
            raise ValueError("rows: send feature rows or OHLCV columns, not both")
        if self.version is not None and "@" in self.pipeline:
            raise ValueError("version: the pipeline already names its version (NAME@VERSION)")


class CreateArgs(Args):
    """A pipeline's spec under its name: a new version, or the latest when its spec is the same."""

    name: Name
    steps: Steps
    nan: NanPolicy = "drop"
    fill: Fill = 0.0
    description: Description = ""

    def __post_init__(self) -> None:
        check_policy(self.nan, self.fill)

    def spec(self) -> dict[str, Any]:
        """The spec as the pipeline compiler reads it."""
        return {"steps": self.steps, "nan": self.nan, "fill": self.fill, "description": self.description}


class DeleteArgs(Args):
    """A pipeline (every version), or one version (NAME@VERSION or ``version``)."""

    pipeline: Ref
    version: PositiveInt | None = None

    def __post_init__(self) -> None:
        if self.version is not None and "@" in self.pipeline:
            raise ValueError("version: the pipeline already names its version (NAME@VERSION)")


# -- replies --------------------------------------------------------------------------------------------


class VersionInfo(TypedDict):
    """One pipeline version, without its fitted numbers."""

    name: str
    version: int
    spec: dict[str, Any]
    fitted: bool
    features: list[str]
    inputs: list[str]
    lookback: int
    created: str
    fitted_rows: int
    needs_fit: bool


class PipelineInfo(TypedDict):
    name: str
    declared: bool  # in plugins.toml (or built in): never deleted whole
    latest: int
    versions: list[VersionInfo]


class PipelinesReply(TypedDict):
    pipelines: list[PipelineInfo]
    refused_files: dict[str, str]  # file -> why it was not loaded


class VersionReply(VersionInfo):
    """The version created (``new``: false when the latest had the same spec)."""

    pipeline: str
    new: bool


class FitReply(VersionInfo):
    """The fitted version, the version it was fitted from and the complete rows it was fitted on."""

    pipeline: str
    fitted_from: str
    rows: int


class DeleteReply(TypedDict):
    pipeline: str
    deleted_versions: list[int]


class ExtractReply(TypedDict):
    pipeline: str  # NAME@VERSION, or inline@0
    features: list[str]
    rows: int
    first_complete: int | None  # the first row with every feature a number
    values: Matrix
    cached: bool


class TransformReply(TypedDict):
    pipeline: str
    features: list[str]
    values: Matrix
    index: list[int]  # which input rows the values are (an int64 ndarray over msgpack)
    dropped: int


# -- the client -----------------------------------------------------------------------------------------


class Features(ServiceClient):
    """The ``features`` service's ops that other plugins call."""

    service = SERVICE

    async def pipelines(self, pipeline: str | None = None) -> PipelinesReply:
        """Every pipeline, or the one named."""
        result: PipelinesReply = await self.call("pipelines", PipelinesArgs(pipeline=pipeline))
        return result

    async def fit(self, pipeline: str, columns: dict[str, np.ndarray]) -> FitReply:
        """Fit the transforms of `pipeline` on OHLCV `columns`: the fitted pipeline is the next version."""
        result: FitReply = await self.call("fit", FitArgs(pipeline=pipeline, **columns))
        return result

    async def extract(self, pipeline: str, columns: dict[str, np.ndarray], *, transform: bool = False
                      ) -> ExtractReply:
        """The feature matrix of `pipeline` over OHLCV `columns`."""
        result: ExtractReply = await self.call(
            "extract", ExtractArgs(pipeline=pipeline, transform=transform, **columns))
        return result

    async def transform(self, pipeline: str, columns: dict[str, np.ndarray]) -> TransformReply:
        """The transformed rows of `pipeline` over OHLCV `columns`, under its NaN policy."""
        result: TransformReply = await self.call("transform", TransformArgs(pipeline=pipeline, **columns))
        return result
