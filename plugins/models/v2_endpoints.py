"""The Open Inference Protocol (KServe V2) served by the models service: server and model metadata,
readiness, and inference in JSON or Triton's binary tensors (the codec is `v2`).

Inference routes are raw (the op gets the body as it came): whatever goes wrong with one answers the
protocol's error, ``{"error": "..."}``, with the status of the fault (400 bad request, 404 unknown model
or version, 413 too many rows, 503 no version loads). A large request is decoded, predicted and encoded
on the thread pool, off the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
import orjson

from ml_processing.sdk import VERSION, BadRequest, MlpError, NotFound, TooLarge, Unavailable

from . import v2
from .catalog import Catalog, Loaded
from .declarations import V2InferArgs, V2ModelReady, V2Raw, V2Server
from .inference import Inference, check_values

#: Request bodies above this many bytes are handled on the thread pool.
INLINE_BYTES = 256 * 1024
_JSON = "application/json"


class V2Endpoints:
    def __init__(self, catalog: Catalog, inference: Inference, server_name: str, max_batch: int,
                 run_in_thread: Callable[..., Awaitable[Any]]) -> None:
        self.catalog = catalog
        self.inference = inference
        self.server_name = server_name
        self.max_batch = max_batch
        self.run_in_thread = run_in_thread

    def server(self) -> V2Server:
        return {"name": self.server_name, "version": VERSION, "extensions": ["binary_tensor_data"]}

    def ready(self) -> dict[str, bool]:
        if not self.catalog.current:
            raise Unavailable("no model is loaded yet", field="models")
        return {"ready": True}

    def metadata(self, loaded: Loaded) -> dict[str, Any]:
        """The model's metadata (`V2Metadata`)."""
        predictor = loaded.predictor
        classifier = predictor.task == "classification"
        outputs = [("predict", "INT64" if classifier else "FP64", [-1])]
        if classifier:
            outputs.append(("predict_proba", "FP64", [-1, len(predictor.classes or [])]))
        return v2.model_metadata(loaded.name, [str(v) for v in self.catalog.store.versions(loaded.name)],
                                 f"ml-processing_{loaded.manifest['kind']}",
                                 [("input-0", "FP64", [-1, predictor.n_features])], outputs)

    def model_ready(self, loaded: Loaded) -> V2ModelReady:
        return {"name": loaded.name, "version": str(loaded.version), "ready": True}

    def infer(self, args: V2InferArgs, version: str | None = None) -> V2Raw | Awaitable[V2Raw]:
        """One input tensor of shape [rows, features] (or [features]); outputs ``predict`` and, for
        classifiers, ``predict_proba``."""
        start = time.perf_counter_ns()
        try:
            loaded = self.catalog.get(args.name, _version(args.name, version), field="name")
            if len(args.body) > INLINE_BYTES:
                return self._infer_in_thread(loaded, args, start)
            return self._answer(loaded, _infer(loaded, args.body, args.headers, self.max_batch), start)
        except MlpError as exc:
            return error(exc)

    async def _infer_in_thread(self, loaded: Loaded, args: V2InferArgs, start: int) -> V2Raw:
        try:
            done = await self.run_in_thread(_infer, loaded, args.body, args.headers, self.max_batch)
        except MlpError as exc:
            return error(exc)
        return self._answer(loaded, done, start)

    def _answer(self, loaded: Loaded, done: tuple[int, bytes, dict[str, str], str], start: int) -> V2Raw:
        rows, body, headers, content_type = done
        self.inference.count(loaded.name, rows, time.perf_counter_ns() - start)
        return {"body": body, "headers": headers, "content_type": content_type}


def error(exc: MlpError) -> V2Raw:
    """The protocol's error answer."""
    return {"status": exc.http_status, "body": orjson.dumps({"error": exc.message}), "content_type": _JSON}


def _version(name: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not 0 < int(text) < 2**31:
        raise NotFound(f"model {name!r} has no version {text!r:.40}", field="version")
    return int(text)


def _infer(loaded: Loaded, body: bytes, headers: Mapping[str, str], max_batch: int
           ) -> tuple[int, bytes, dict[str, str], str]:
    """Decode, check, predict, encode: ``(rows, body, headers, content type)``."""
    request = v2.decode_infer_request(body, headers)
    n = loaded.predictor.n_features
    if len(request.inputs) != 1:
        raise BadRequest(f"send one input tensor of shape [rows, {n}], got {len(request.inputs)}", field="inputs")
    tensor = request.inputs[0]
    if tensor.data.dtype.kind not in "biuf":
        raise BadRequest(f"input {tensor.name!r} must be numeric, not {tensor.datatype}", field="inputs[0].datatype")
    x = np.ascontiguousarray(tensor.data, dtype=np.float64)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] != n:
        raise BadRequest(f"input shape {list(tensor.data.shape)}: model {loaded.name}@{loaded.version} takes "
                         f"[rows, {n}]", field="inputs[0].shape")
    if len(x) > max_batch:
        raise TooLarge(f"{len(x):,} rows; at most {max_batch:,}", field="inputs[0].shape")
    check_values(loaded, x, "rows")
    prediction = loaded.predictor.predict(x)
    outputs: list[tuple[str, np.ndarray]] = [("predict", np.asarray(prediction.values))]
    if prediction.proba is not None:
        outputs.append(("predict_proba", prediction.proba))
    out, out_headers, content_type = v2.encode_infer_response(loaded.name, str(loaded.version), outputs, request)
    return len(x), out, out_headers, content_type
