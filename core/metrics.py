"""Prometheus metrics of one kernel: a collector that reads the live counters at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

if TYPE_CHECKING:
    from .kernel import Kernel

from .opstats import BUCKETS
from .supervisor import State


class KernelCollector:
    """Reads broker, pub/sub, edge and supervision counters; nothing is counted twice on the hot path."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def collect(self) -> Iterator[Metric]:
        k = self.kernel
        requests = CounterMetricFamily("mlp_actor_requests", "Requests answered per actor", labels=["actor"])
        errors = CounterMetricFamily("mlp_actor_errors", "Error replies per actor", labels=["actor"])
        restarts = CounterMetricFamily("mlp_actor_restarts", "Supervised restarts per actor", labels=["actor"])
        internal = CounterMetricFamily("mlp_actor_internal_errors",
                                       "Requests answered 'internal' (isolated to the request, never a restart)",
                                       labels=["actor"])
        messages = CounterMetricFamily("mlp_actor_messages_dropped",
                                       "Pub/sub messages an actor dropped: refused for their content, or failed",
                                       labels=["actor", "reason"])
        state = GaugeMetricFamily("mlp_actor_state", "1 for the actor's current lifecycle state",
                                  labels=["actor", "state"])
        for name, cell in k.cells.items():
            requests.add_metric([name], cell.requests)
            errors.add_metric([name], cell.errors)
            restarts.add_metric([name], cell.restarts)
            internal.add_metric([name], cell.internal_errors)
            messages.add_metric([name, "rejected"], cell.messages_rejected)
            messages.add_metric([name, "failed"], cell.messages_failed)
            for s in State:
                state.add_metric([name, s.value], 1.0 if cell.state == s else 0.0)
        yield from (requests, errors, restarts, internal, messages, state)
        yield from self._ops()
        events = CounterMetricFamily("mlp_actor_events", "What an actor counts of its own (bars committed, "
                                     "predictions, signals, labels, drifts ...)", labels=["actor", "event"])
        for name, cell in k.cells.items():
            if cell.instance is not None:
                for event, count in cell.instance.counters().items():
                    events.add_metric([name, event], count)
        yield events
        processes = GaugeMetricFamily("mlp_processes", "Processes of this service by state (serve --processes)",
                                      labels=["state"])
        by_state = {"running": 1.0 if k.state == "running" else 0.0, "starting": 0.0, "exited": 0.0}
        for member in k.group.status() if k.group is not None else []:
            by_state[member["state"]] = by_state.get(member["state"], 0.0) + 1
        for name, count in by_state.items():
            processes.add_metric([name], count)
        yield processes
        if k.broker is not None:
            st = k.broker.stats
            broker = CounterMetricFamily("mlp_broker_messages", "MDP broker counters", labels=["kind"])
            for kind in ("requests", "local_requests", "errors", "malformed", "timeouts", "workers_expired",
                         "refused", "refused_ready"):
                broker.add_metric([kind], getattr(st, kind))
            yield broker
            workers = GaugeMetricFamily("mlp_broker_workers", "Live remote workers per service", labels=["service"])
            for service, info in k.broker.services().items():
                workers.add_metric([service], info.get("workers", 0))
            yield workers
            yield GaugeMetricFamily("mlp_broker_inflight", "Requests in flight", value=k.broker.inflight)
        if k.subscriber is not None:
            sub = CounterMetricFamily("mlp_pubsub_received", "Pub/sub messages received", labels=["outcome"])
            ss = k.subscriber.stats
            sub.add_metric(["ok"], ss.received - ss.dropped)
            sub.add_metric(["dropped"], ss.dropped)
            sub.add_metric(["handler_error"], ss.handler_errors)
            yield sub
            dropped = CounterMetricFamily("mlp_pubsub_dropped", "Inbound pub/sub messages dropped, by reason",
                                          labels=["reason"])
            for reason, count in ss.drops().items():
                dropped.add_metric([reason], count)
            yield dropped
        if k.publisher is not None:
            yield CounterMetricFamily("mlp_pubsub_published", "Pub/sub messages published",
                                      value=k.publisher.published)
        if k.proxy is not None:
            proxy = k.proxy_status()
            running = GaugeMetricFamily("mlp_pubsub_proxy_running", "Whether the pub/sub proxy runs, by where",
                                        labels=["runs"])
            running.add_metric([proxy["runs"]], 1.0 if proxy["running"] else 0.0)
            yield running
            if "in_bytes" in proxy:  # ZeroMQ's proxy on a thread counts frames, as ZeroMQ does
                frames = CounterMetricFamily("mlp_pubsub_proxy_frames", "Frames the proxy thread read from "
                                             "publishers (in) and sent to subscribers (out)", labels=["direction"])
                frames.add_metric(["in"], proxy["in"])
                frames.add_metric(["out"], proxy["out"])
                yield frames
        if k.edge_stats is not None:
            http = CounterMetricFamily("mlp_http_responses", "REST responses by status", labels=["status"])
            for status, count in sorted(k.edge_stats.by_status.items()):
                http.add_metric([str(status)], count)
            yield http
        if k.caches:
            hits = CounterMetricFamily("mlp_cache_hits", "Cache lookups that hit", labels=["cache"])
            misses = CounterMetricFamily("mlp_cache_misses", "Cache lookups that missed", labels=["cache"])
            entries = GaugeMetricFamily("mlp_cache_entries", "Entries held", labels=["cache"])
            evictions = CounterMetricFamily("mlp_cache_evictions", "Entries evicted to make room", labels=["cache"])
            for name, cache in k.caches.items():
                hits.add_metric([name], cache.hits)
                misses.add_metric([name], cache.misses)
                entries.add_metric([name], len(cache))
                evictions.add_metric([name], cache.evictions)
            yield from (hits, misses, entries, evictions)
        for histogram in k.histograms.values():
            yield from histogram.collect()
        security = k.security
        if security.audit is not None:
            yield CounterMetricFamily("mlp_audit_records", "State-changing ops written to the audit trail",
                                      value=security.audit.written)
        if security.gate is not None:
            refused = CounterMetricFamily("mlp_security_refused", "Requests and connections refused",
                                          labels=["why"])
            refused.add_metric(["forbidden"], security.gate.refused)
            refused.add_metric(["connection"], security.zap_refused)
            yield refused
        plugins = GaugeMetricFamily("mlp_plugins", "Plugins by status", labels=["status"])
        counts = {"loaded": 0, "broken": 0, "disabled": 0}
        for plugin in k.plugins.infos.values():
            counts["disabled" if not plugin.enabled else "broken" if plugin.error else "loaded"] += 1
        for name, count in counts.items():
            plugins.add_metric([name], count)
        yield plugins


    def _ops(self) -> Iterator[Metric]:
        latency = HistogramMetricFamily("mlp_op_latency_seconds", "Time from a request reaching its actor to "
                                        "its answer, per op", labels=["actor", "op"])
        errors = CounterMetricFamily("mlp_op_errors", "Requests answered with an error, per op",
                                     labels=["actor", "op"])
        bounds = [*(repr(b) for b in BUCKETS), "+Inf"]
        for name, cell in self.kernel.cells.items():
            for op, stats in cell.op_stats.items():
                latency.add_metric([name, op], list(zip(bounds, stats.cumulative(), strict=True)), stats.total)
                errors.add_metric([name, op], stats.errors)
        yield latency
        yield errors


def make_registry(kernel: Kernel) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KernelCollector(kernel))
    ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()
