"""Models: a versioned registry of xgboost, LightGBM, scikit-learn, ONNX, river and ensemble models, and
microsecond inference.

Registered exactly as a third-party plugin would be: ``register_model_kinds`` fills the shared registry of
model kinds (the contract is `ml_processing.sdk.model.ModelKind`), ``register_actors`` runs the ``models``
service, ``register_routes`` adds the registry routes beside the seed's predict routes (their schemas come
from the ops' declarations, `declarations`). Feature pipelines and held bars are reached over the bus
through the SDK's typed clients (`ml_processing.sdk.services`), never imported.
"""

from __future__ import annotations

from ml_processing.sdk import Actor, Config, Route, hookimpl
from ml_processing.sdk.model import ModelKind

from .actor import Models
from .config import ModelsConfig
from .kinds import builtin_kinds


@hookimpl
def register_config_schemas() -> dict[str, type]:
    return {"models": ModelsConfig}


@hookimpl
def register_model_kinds() -> list[ModelKind]:
    return builtin_kinds()


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [Models]


#: The Open Inference Protocol's error body.
V2_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


@hookimpl
def register_routes() -> list[Route]:
    model = "/api/v1/models/{model_id}"
    return [
        # the seed's routes
        Route("POST", "/api/v1/predict", "models", "predict", "Single prediction", "models"),
        Route("POST", "/api/v1/predict/batch", "models", "predict_batch", "Batch prediction", "models"),
        Route("GET", "/api/v1/models", "models", "list", "List models", "models"),
        Route("GET", "/api/v1/models/{model_id}", "models", "get", "Model details", "models"),
        Route("POST", model + "/versions", "models", "register",
              "Register a version from an artifact (xgboost JSON/UBJ, LightGBM text, skops, ONNX, ensemble JSON; "
              "base64 in JSON, bytes in msgpack)",
              "models"),
        Route("POST", model + "/promote", "models", "promote", "Make a version the current one", "models"),
        Route("POST", model + "/rollback", "models", "rollback", "Back to the previous current version", "models"),
        Route("DELETE", model + "/versions/{version}", "models", "delete",
              "Delete a version (the current one only with force=true)", "models",
              query=(("force", "boolean", "also the current version"),)),
        Route("GET", "/api/v1/model-kinds", "models", "kinds", "Registered model kinds and their formats", "models"),
        Route("POST", "/api/v1/learn", "models", "learn",
              "A label: for a row (test then train) or for a live prediction (symbol, timeframe, ts)", "models"),
        Route("GET", model + "/weights", "models", "weights", "An ensemble's adaptive weights", "models"),
        Route("POST", model + "/weights/reset", "models", "reset_weights", "Put an ensemble's weights back to equal",
              "models"),
        Route("POST", "/api/v1/train", "models", "train",
              "Start a training job (xgboost, LightGBM, scikit-learn, river) on OHLCV columns or a held series",
              "models"),
        Route("GET", "/api/v1/train/jobs", "models", "jobs", "Training and backfill jobs, their status, and where "
              "they run", "models"),
        Route("GET", "/api/v1/train/jobs/{job_id}", "models", "job", "One training or backfill job", "models"),
        Route("POST", "/api/v1/train/jobs/{job_id}/cancel", "models", "cancel", "Cancel a training or backfill job",
              "models"),
        Route("POST", "/api/v1/datasets/{dataset}/backfill", "models", "backfill",
              "Start a backfill: a pipeline's feature rows for many series, stored as a dataset", "models"),
        Route("GET", "/api/v1/datasets", "models", "datasets", "The datasets backfills stored", "models"),
        Route("GET", "/api/v1/models-live", "models", "live",
              "Live predictions, signals, labels, prequential scores, ensemble weights, drift", "models",
              query=(("timelines", "boolean", "also accuracy and weights over time"),)),
        # the Open Inference Protocol (KServe V2), with Triton's binary tensor data extension
        Route("GET", "/v2", "models", "v2_server", "V2 server metadata", "inference-v2"),
        Route("GET", "/v2/health/live", "models", "v2_live", "V2 liveness", "inference-v2"),
        Route("GET", "/v2/health/ready", "models", "v2_ready", "V2 readiness: a model is loaded", "inference-v2"),
        Route("GET", "/v2/models/{name}", "models", "v2_model", "V2 model metadata", "inference-v2"),
        Route("GET", "/v2/models/{name}/versions/{version}", "models", "v2_version", "V2 model metadata of a version",
              "inference-v2"),
        Route("GET", "/v2/models/{name}/ready", "models", "v2_model_ready", "V2 model readiness", "inference-v2"),
        Route("GET", "/v2/models/{name}/versions/{version}/ready", "models", "v2_version_ready",
              "V2 readiness of a version", "inference-v2"),
        Route("POST", "/v2/models/{name}/infer", "models", "v2_infer", "V2 inference (JSON or binary tensors)",
              "inference-v2", content_type="raw", error_schema=V2_ERROR),
        Route("POST", "/v2/models/{name}/versions/{version}/infer", "models", "v2_version_infer",
              "V2 inference on a version", "inference-v2", content_type="raw", error_schema=V2_ERROR),
    ]

