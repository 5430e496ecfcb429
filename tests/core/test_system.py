"""The kernel service: /metrics/ml carries the seed's whole shape with the same figures as /health."""

from __future__ import annotations

import aiohttp

from ml_processing.core.kernel import VERSION, Kernel
from ml_processing.core.system import HEALTH_TEMPLATE

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
