"""The built-in ``kernel`` service: health, metrics, plugins and services of this process.

It is a plugin like any other (registered through ``register_actors``), so the REST edge learns health
and metrics through bus requests and never imports the kernel.
"""

from __future__ import annotations

import copy
import os
import time
from typing import Any

from ml_processing.bus.edge.routes import Route

from .actor import Actor, ActorContext, op
from .config import Config
from .hookspecs import hookimpl
from .kernel import VERSION
from .merging import merge_fragments
from .metrics import make_registry, render
from .ops import NoArgs

#: The seed's sections of /health and /metrics/ml. Fields no capability fills stay zero or empty; nothing is
#: invented. Both routes build them from the actors' ``health`` fragments, so they always agree.
HEALTH_TEMPLATE: dict[str, Any] = {
    "ml_status": {"models_loaded": 0, "models_healthy": 0, "training_active": False, "feature_pipelines": 0},
    "performance_metrics": {"avg_prediction_time_ms": 0.0, "cache_hit_rate": "0.0%",
                            "predictions_per_second": 0, "model_accuracy": {}},
    "technical_analysis": {"indicators_calculated": 0, "patterns_detected": 0, "signals_generated": 0},
}


class KernelService(Actor):
    """Answers ``ping``, ``health``, ``health_models``, ``metrics``, ``metrics_ml``, ``plugins``, ``services``."""

    name = "kernel"

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.kernel = ctx.kernel
        self.registry = make_registry(self.kernel)

    def _fragments(self, method: str) -> dict[str, Any]:
        merged = copy.deepcopy(HEALTH_TEMPLATE) if method == "health" else {}
        for cell in self.kernel.cells.values():
            if cell.instance is not None and cell.instance is not self:
                merge_fragments(merged, getattr(cell.instance, method)())
        return merged

    @op(reply=str, role="read")
    def handle_ping(self, args: NoArgs) -> str:
        "Liveness of the bus path: answers 'pong'."
        return "pong"

    @op(reply=dict[str, Any], role="read")
    def handle_health(self, args: NoArgs) -> dict[str, Any]:
        "Service health in the seed's JSON shape, with every actor, plugin and bus counter."
        k = self.kernel
        body = self._fragments("health")
        body.pop("models", None)
        return {
            "service": k.config.service.name,
            "status": k.status,
            "version": VERSION,
            "env": k.config.service.env,
            "uptime_s": round(time.time() - k.started_at, 3),
            **body,
            "actors": {name: cell.status() for name, cell in k.cells.items()},
            "processes": [{"index": 0, "pid": os.getpid(), "state": k.state, "restarts": 0, "role": "serve"},
                          *({**p, "role": "worker"} for p in (k.group.status() if k.group else []))],
            "shards": k.keeper.status() if k.keeper else k.member.status(),
            "plugins": {"loaded": sorted(i.name for i in k.plugins.infos.values() if i.enabled and not i.error),
                        "broken": {i.name: i.error for i in k.plugins.infos.values() if i.error},
                        "disabled": sorted(i.name for i in k.plugins.infos.values() if not i.enabled)},
            "bus": {"endpoints": k.endpoints,
                    "proxy": k.proxy_status(),
                    "malformed_frames": (k.broker.stats.malformed if k.broker else 0)
                    + (k.subscriber.stats.malformed if k.subscriber else 0),
                    "pubsub_dropped": k.subscriber.stats.drops() if k.subscriber else {},
                    "messages_dropped_by_actors": sum(c.messages_rejected + c.messages_failed
                                                      for c in k.cells.values()),
                    "inflight": k.broker.inflight if k.broker else 0},
        }

    @op(reply=dict[str, Any], role="read")
    def handle_health_models(self, args: NoArgs) -> dict[str, Any]:
        "Every loaded model and its status."
        body = self._fragments("health")
        models = body.get("models", [])
        return {"service": self.kernel.config.service.name, "status": self.kernel.status,
                "models_loaded": body["ml_status"]["models_loaded"],
                "models_healthy": body["ml_status"]["models_healthy"], "models": models}

    @op(reply=str, role="read")
    def handle_metrics(self, args: NoArgs) -> str:
        "Prometheus metrics, as text."
        return render(self.registry)

    @op(reply=dict[str, Any], role="read")
    def handle_metrics_ml(self, args: NoArgs) -> dict[str, Any]:
        "ML performance figures in the seed's shape (the same figures as /health), then each actor's own."
        k = self.kernel
        seed = self._fragments("health")
        extra = self._fragments("metrics")
        return {"service": k.config.service.name, "status": k.status, "version": VERSION,
                **{section: seed[section] for section in HEALTH_TEMPLATE},
                **{key: value for key, value in extra.items() if key not in HEALTH_TEMPLATE and key != "models"},
                "caches": {name: cache.stats() for name, cache in k.caches.items()}}

    @op(reply=list[dict[str, Any]], role="read")
    def handle_plugins(self, args: NoArgs) -> list[dict[str, Any]]:
        "Loaded plugins, their source, hooks, actors and routes."
        report: list[dict[str, Any]] = self.kernel.plugins.report()
        return report

    @op(reply=dict[str, Any], role="read")
    def handle_services(self, args: NoArgs) -> dict[str, Any]:
        "Services the broker knows and their workers."
        broker = self.kernel.broker
        return broker.services() if broker is not None else {}


@hookimpl
def register_actors(settings: Config) -> list[type[Actor]]:
    return [KernelService]


@hookimpl
def register_routes() -> list[Route]:
    return [
        Route("GET", "/health", "kernel", "health", "Service health in the seed's JSON shape", "health"),
        Route("GET", "/health/models", "kernel", "health_models", "Every loaded model and its status", "health"),
        Route("GET", "/metrics/ml", "kernel", "metrics_ml", "ML performance figures", "health"),
        Route("GET", "/metrics", "kernel", "metrics", "Prometheus metrics", "health", content_type="text"),
        Route("GET", "/api/v1/ping", "kernel", "ping", "Liveness of the bus path: edge -> broker -> kernel actor",
              "kernel"),
        Route("GET", "/api/v1/plugins", "kernel", "plugins", "Loaded plugins, their hooks and actors", "kernel"),
        Route("GET", "/api/v1/services", "kernel", "services", "Services the broker knows and their workers",
              "kernel"),
    ]
