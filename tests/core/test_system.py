"""The kernel service: /metrics/ml carries the seed's whole shape with the same figures as /health; /health
shows where the pub/sub proxy runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ml_processing.bus.proxy import ProxyThread
from ml_processing.core.kernel import VERSION, Kernel
from ml_processing.core.system import HEALTH_TEMPLATE
from tests.conftest import make_config
from tests.core.helpers import running, wait_until

SEED_SECTIONS = ("ml_status", "performance_metrics", "technical_analysis")


async def test_metrics_ml_has_the_seed_shape_and_agrees_with_health(kernel: Kernel) -> None:
    bars = {"close": [float(v) for v in range(1, 40)]}
    await kernel.request("indicators", "compute", {**bars, "indicators": ["SMA", "RSI"]})
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{kernel.edge_url}/health") as resp:
            health = await resp.json()
        async with http.get(f"{kernel.edge_url}/metrics/ml") as resp:
            assert resp.status == 200
            ml = await resp.json()
    assert (ml["service"], ml["status"], ml["version"]) == ("ml-processing", health["status"], VERSION)
    assert set(HEALTH_TEMPLATE) == set(SEED_SECTIONS)
    for section in SEED_SECTIONS:
        assert ml[section] == health[section], section
        assert set(ml[section]) >= set(HEALTH_TEMPLATE[section]), section
    assert ml["technical_analysis"]["indicators_calculated"] == 2
    assert "caches" in ml


async def test_health_counts_isolated_failures_per_actor(kernel: Kernel) -> None:
    health = await kernel.request("kernel", "health", {})
    for status in health["actors"].values():
        assert {"internal_errors", "messages_failed", "messages_rejected"} <= set(status)


async def test_health_shows_where_the_proxy_runs_and_a_proxy_thread_that_ended_degrades_it(tmp_path: Path) -> None:
    base = make_config(tmp_path)
    async with running(dataclasses.replace(base, bus=dataclasses.replace(base.bus, proxy="thread"))) as kernel:
        health = await kernel.request("kernel", "health", {})
        assert health["status"] == "healthy"
        assert health["bus"]["proxy"]["runs"] == "thread" and health["bus"]["proxy"]["running"] is True
        metrics = _proxy_metrics(await kernel.request("kernel", "metrics", {}))
        assert metrics["running"] == 1.0 and metrics["in"] >= 0 and metrics["out"] >= 0
        proxy = kernel.proxy
        assert isinstance(proxy, ProxyThread) and proxy._control is not None
        proxy._control.send(b"TERMINATE")  # the thread ends, not through the kernel's stop
        await wait_until(lambda: not proxy.running, timeout=5, what="the proxy thread to end")
        health = await kernel.request("kernel", "health", {})
        assert health["status"] == "degraded" and health["bus"]["proxy"]["running"] is False
        assert _proxy_metrics(await kernel.request("kernel", "metrics", {}))["running"] == 0.0


def _proxy_metrics(text: str) -> dict[str, float]:
    """The proxy's series of a /metrics text: ``running`` (its label ``runs`` checked), frames by direction."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "mlp_pubsub_proxy_running":
                assert sample.labels == {"runs": "thread"}
                out["running"] = sample.value
            elif sample.name == "mlp_pubsub_proxy_frames_total":
                out[sample.labels["direction"]] = sample.value
    return out
