"""The ``features`` service as other plugins call it: pipelines, extraction and transformation."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ml_processing.core.ops import Args, PositiveInt

from ..columns import Columns
from ._client import ServiceClient

SERVICE = "features"


class PipelinesArgs(Args):
    """One pipeline (NAME), or all."""

    pipeline: str | None = None


class PipelineRef(Columns):
    """Which pipeline: ``pipeline`` (NAME or NAME@VERSION, with ``version`` optional), or inline ``steps``."""

    pipeline: str | None = None
    version: PositiveInt | None = None
    steps: list[dict[str, Any]] | None = None
    nan: Literal["drop", "fill", "reject"] | None = None
    fill: float | None = None


class ExtractArgs(PipelineRef):
    """OHLCV columns -> the pipeline's feature matrix; ``transform`` applies its fitted transforms too."""

    transform: bool = False


class TransformArgs(PipelineRef):
    """Feature ``rows`` (or OHLCV columns) -> transformed rows under the pipeline's NaN policy."""

    rows: Any = None  # a list of rows of numbers (null for missing), or a 2-D ndarray


class Features(ServiceClient):
    service = SERVICE

    async def pipelines(self, pipeline: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("pipelines", PipelinesArgs(pipeline=pipeline))
        return result

    async def extract(self, pipeline: str, columns: dict[str, np.ndarray], *, transform: bool = False
                      ) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "extract", ExtractArgs(pipeline=pipeline, transform=transform, **columns))
        return result

    async def transform(self, pipeline: str, columns: dict[str, np.ndarray]) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("transform", TransformArgs(pipeline=pipeline, **columns))
        return result
