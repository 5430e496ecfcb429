"""The REST route table: every route is one bus request, described by a `Route`.

The seed's paths are listed here; plugins add theirs through the ``register_routes`` hook. The OpenAPI
document is generated from the same objects, so it cannot drift from what the app serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Route:
    """One REST route translated to one bus request ``(service, op, args)``.

    ``args`` are built from the JSON body (an object) for POST/PUT/PATCH, then the path parameters, then
    the declared query parameters. ``content_type="text"`` sends a string result as text/plain (for
    Prometheus). ``content_type="raw"`` is for protocols with their own body format: the op gets the body
    as bytes (``args["body"]``), the request's ``content_type`` and ``headers`` (lowercase names), and
    returns ``{"body": bytes, "content_type"?, "status"?, "headers"?}``, sent as it is.
    """

    method: str
    path: str
    service: str
    op: str
    summary: str
    tag: str = "service"
    request_schema: dict[str, Any] | None = None
    response_schema: dict[str, Any] = field(default_factory=lambda: dict(OBJECT))
    query: tuple[tuple[str, str, str], ...] = ()  # (name, JSON type, description)
    content_type: str = "json"

    @property
    def has_body(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH")

    @property
    def operation_id(self) -> str:
        return f"{self.service}.{self.op}"


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


def check_route(route: Route) -> None:
    """Raise ValueError unless `route` can be served (method, absolute path, names)."""
    if route.method not in _METHODS:
        raise ValueError(f"route method {route.method!r} is not one of {', '.join(sorted(_METHODS))}")
    if not isinstance(route.path, str) or not route.path.startswith("/") or " " in route.path:
        raise ValueError(f"route path {route.path!r} must be an absolute URL path")
    if not route.service or not route.op:
        raise ValueError(f"route {route.method} {route.path} needs a service and an op")


def _post(path: str, service: str, op: str, summary: str, tag: str) -> Route:
    return Route("POST", path, service, op, summary, tag, request_schema=dict(OBJECT))


def _get(path: str, service: str, op: str, summary: str, tag: str,
         query: tuple[tuple[str, str, str], ...] = ()) -> Route:
    return Route("GET", path, service, op, summary, tag, query=query)


#: The seed's REST surface. Each route answers 503 ``unavailable`` until a plugin serves its service.
CORE_ROUTES: tuple[Route, ...] = (
    _get("/health", "kernel", "health", "Service health in the seed's JSON shape", "health"),
    _get("/health/models", "kernel", "health_models", "Every loaded model and its status", "health"),
    _get("/metrics/ml", "kernel", "metrics_ml", "ML performance figures", "health"),
    Route("GET", "/metrics", "kernel", "metrics", "Prometheus metrics", "health",
          response_schema={"type": "string"}, content_type="text"),
    _get("/api/v1/ping", "kernel", "ping", "Liveness of the bus path: edge -> broker -> kernel actor", "kernel"),
    _get("/api/v1/plugins", "kernel", "plugins", "Loaded plugins, their hooks and actors", "kernel"),
    _get("/api/v1/services", "kernel", "services", "Services the broker knows and their workers", "kernel"),
    _post("/api/v1/predict", "models", "predict", "Single prediction", "models"),
    _post("/api/v1/predict/batch", "models", "predict_batch", "Batch prediction", "models"),
    _get("/api/v1/models", "models", "list", "List models", "models"),
    _get("/api/v1/models/{model_id}", "models", "get", "Model details", "models"),
    _post("/api/v1/features/extract", "features", "extract", "Extract features from OHLCV", "features"),
    _post("/api/v1/features/transform", "features", "transform", "Transform feature rows", "features"),
    _get("/api/v1/features/pipeline", "features", "pipelines", "Feature pipelines: versions, steps, features, fitted",
         "features", query=(("pipeline", "string", "one pipeline only"),)),
    _post("/api/v1/indicators", "indicators", "compute", "Compute technical indicators", "indicators"),
    _post("/api/v1/patterns/detect", "patterns", "detect", "Detect candlestick and chart patterns", "patterns"),
    _post("/api/v1/sentiment/analyze", "sentiment", "analyze", "Market and text sentiment", "sentiment"),
    _get("/api/v1/analysis/timeframes", "indicators", "timeframes", "Multi-timeframe analysis", "indicators",
         query=(("symbol", "string", "symbol to analyse"),
                ("timeframes", "string", "comma-separated timeframes"))),
)
