"""The Grafana dashboard and its provisioning (deploy/): valid Grafana JSON, and every metric, label and label
value it queries is one that a real kernel's /metrics exposes after traffic (a model registered and predicted,
indicators computed, bars published, requests refused), with authentication on as in the container."""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from ml_processing.bus import codec, topics
from ml_processing.core.config import SecurityConfig
from ml_processing.core.security.keys import KeyRing
from ml_processing.core.security.tokens import TokenStore
from tests.conftest import make_config
from tests.deploy.dashboard import (
    ROOT,
    VARIABLE,
    expressions,
    interpolate,
    load,
    panels,
    parse,
)
from tests.support.feed import connected
from tests.support.kernels import running
from tests.support.models import NAMES, X, xgb_artifact
from tests.support.waiting import wait_until

#: Series Prometheus makes itself for each target, not read from /metrics.
SYNTHETIC = {"up"}
#: Labels Prometheus adds to every series from its target (deploy/prometheus/prometheus.yml).
TARGET_LABELS = {"instance", "job"}
#: A matcher value that names label values: one word, or words joined by `|`.
PLAIN_ALTERNATIVES = re.compile(r"^[\w.+-]+(\|[\w.+-]+)*$")
PANEL_TYPES = {"row", "stat", "timeseries", "heatmap", "table", "bargauge", "gauge", "state-timeline"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BARS = 40

Exposed = dict[str, dict[str, set[str]]]  # series name -> label -> values


def exposed(text: str) -> Exposed:
    """Every series name in a /metrics text (``_total``, ``_bucket``, ``_sum``, ``_count`` as written) with
    the labels and values it carries."""
    series: Exposed = defaultdict(lambda: defaultdict(set))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = series[sample.name]
            for label, value in sample.labels.items():
                labels[label].add(value)
    return series


async def drive(kernel: Any, admin: str, computer: str, key: tuple[str, str], server: str) -> str:
    """Traffic of every kind the dashboard shows; the /metrics text afterwards."""
    url = kernel.edge_url
    bearer = {"Authorization": f"Bearer {admin}"}
    async with aiohttp.ClientSession() as http:
        artifact = base64.b64encode(xgb_artifact("json")).decode()
        async with http.post(f"{url}/api/v1/models/trend/versions", headers=bearer,
                             json={"kind": "xgboost", "format": "json", "artifact": artifact,
                                   "features": NAMES}) as resp:
            assert resp.status == 200, await resp.text()
        for _ in range(3):  # the first misses the prediction cache, the others hit it
            async with http.post(f"{url}/api/v1/predict", headers={"Authorization": f"Bearer {computer}"},
                                 json={"model": "trend", "features": X[3].tolist()}) as resp:
                assert resp.status == 200, await resp.text()
        async with http.post(f"{url}/api/v1/indicators", headers=bearer,
                             json={"close": [float(i % 7) + 1.0 for i in range(60)],
                                   "indicators": [{"name": "SMA", "params": {"timeperiod": 5}}]}) as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(f"{url}/api/v1/plugins") as resp:
            assert resp.status == 401  # no token
        async with http.post(f"{url}/api/v1/models/trend/rollback", json={},
                             headers={"Authorization": f"Bearer {computer}"}) as resp:
            assert resp.status == 403  # compute may not change the registry
        await publish_bars(kernel, key, server)

        async def bars_held() -> bool:
            series = await kernel.request("indicators", "series", {})
            return any(s["symbol"] == "EURUSD" and s["timeframe"] == "1m" and s["bars"] >= BARS - 1 for s in series)

        await wait_until(bars_held, what="the published bars in the market state")
        async with http.get(f"{url}/metrics", headers=bearer) as resp:
            assert resp.status == 200
            return await resp.text()


async def publish_bars(kernel: Any, key: tuple[str, str], server: str) -> None:
    """Bars published with a compute key, a malformed frame, and a connection with an unknown key (refused)."""
    ctx = zmq.asyncio.Context()
    try:
        pub, sub, rogue = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB), ctx.socket(zmq.PUB)
        unknown = tuple(k.decode() for k in zmq.curve_keypair())
        for sock, (public, secret) in ((pub, key), (sub, key), (rogue, unknown)):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.CURVE_SERVERKEY, server.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode())
        pub.connect(kernel.endpoints["pub_in"][0])
        sub.connect(kernel.endpoints["pub_out"][0])
        rogue.connect(kernel.endpoints["pub_in"][0])
        await connected(pub, sub)
        for i in range(BARS):
            close = 1.0 + 0.001 * (i % 9)
            bar = {"ts": 60_000 * (i + 1), "open": close, "high": close + 0.002, "low": close - 0.002,
                   "close": close, "volume": 100.0}
            await pub.send_multipart([topics.bar("EURUSD", "1m").encode(), codec.packb(bar)])
        await pub.send_multipart([topics.bar("EURUSD", "1m").encode(), b"\xc1 not msgpack"])
        await rogue.send_multipart([topics.bar("ROGUE", "1m").encode(), codec.packb({"ts": 1})])
        await wait_until(lambda: kernel.security.zap_refused >= 1, what="the unknown key refused")
    finally:
        ctx.destroy(linger=0)


@pytest.fixture
async def metrics_text(tmp_path: Path) -> str:
    cfg = dataclasses.replace(make_config(tmp_path, modules=(), autoload=True),
                              security=SecurityConfig(auth=True))
    folder = cfg.data_path / cfg.security.directory
    store, ring = TokenStore(folder / "tokens.json"), KeyRing(folder)
    admin, computer = store.add("admin", ["admin"]), store.add("desk", ["compute"])
    public, secret = ring.add_client("feed", ["compute"])
    assert secret is not None
    server, _ = ring.server()
    async with running(cfg) as kernel:
        return await drive(kernel, admin, computer, (public, secret), server)


async def test_every_metric_label_and_value_the_dashboard_queries_is_exposed(metrics_text: str) -> None:
    series = exposed(metrics_text)
    dashboard = load()
    problems: list[str] = []
    queried: set[str] = set()
    for where, expr in expressions(dashboard):
        query = parse(where, expr)
        assert query.selectors, f"{where}: selects no series: {expr}"
        for selector in query.selectors:
            queried.add(selector.name)
            if selector.name in SYNTHETIC:
                continue
            if selector.name not in series:
                problems.append(f"{where}: {selector.name} is not in /metrics")
                continue
            labels = series[selector.name]
            for label, op, value in selector.matchers:
                if label in TARGET_LABELS:
                    continue
                if label not in labels:
                    problems.append(f"{where}: {selector.name} has no label {label!r} (has {sorted(labels)})")
                elif op in ("=", "=~") and PLAIN_ALTERNATIVES.match(value):
                    missing = set(value.split("|")) - labels[label]
                    if missing:
                        problems.append(f"{where}: {selector.name}{{{label}}} never reads {sorted(missing)}")
        for by, below in query.groupings:
            known = TARGET_LABELS.union(*(series.get(name, {}).keys() for name in below))
            if not set(by) <= known and not set(below) & SYNTHETIC:
                problems.append(f"{where}: groups by {sorted(set(by) - known)}, which {below} do not carry")
    assert not problems, "\n".join(problems)
    # the dashboard covers what the service says about itself: every series of ours is on some panel (a
    # histogram's _bucket, _sum and _count count as one)
    def family(name: str) -> str:
        return re.sub(r"_(bucket|sum|count)$", "", name) if f"{re.sub(r'_(bucket|sum|count)$', '', name)}_bucket" \
            in series else name

    ours = {family(name) for name in series if name.startswith("mlp_") and not name.endswith("_created")}
    shown = {family(name) for name in queried}
    assert not ours - shown, f"series of /metrics on no panel: {sorted(ours - shown)}"


def test_the_dashboard_is_grafana_json() -> None:
    dashboard = load()
    assert dashboard["uid"] == "ml-processing" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    all_panels = list(panels(dashboard))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert all(isinstance(i, int) for i in ids)
    taken: set[tuple[int, int]] = set()
    for panel in all_panels:
        where = f"panel {panel['id']} {panel.get('title')!r}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel["title"], where
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] + grid["w"] <= 24 and grid["w"] > 0, where
        cells = {(grid["y"] + dy, grid["x"] + dx) for dy in range(grid["h"]) for dx in range(grid["w"])}
        assert not cells & taken, f"{where} overlaps another panel"
        taken |= cells
        if panel["type"] == "row":
            assert "targets" not in panel, where
            continue
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{where}: refIds repeat"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), where
        assert "unit" in panel.get("fieldConfig", {}).get("defaults", {}) or panel["type"] in ("table", "heatmap"), where
    for where, expr in expressions(dashboard):
        unknown = {name for name in VARIABLE.findall(expr) if not name.startswith("__")} - variables.keys()
        assert not unknown, f"{where}: variables {unknown} are not defined"


def test_provisioning_points_grafana_at_prometheus_and_prometheus_at_the_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    for name in ("prometheus", "grafana", "metrics-token"):
        assert services[name]["profiles"] == ["monitoring"], name
    assert "profiles" not in services["ml-processing"]  # `docker compose up` starts the service alone

    def mounts(service: str) -> dict[str, str]:
        """Container path -> host path (or volume) of a service's volumes."""
        return {entry.split(":")[1]: entry.split(":")[0] for entry in services[service]["volumes"]}

    grafana = mounts("grafana")
    sources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/ml-processing.yml").read_text())
    (provider,) = providers["providers"]
    dashboards = provider["options"]["path"]
    assert (ROOT / grafana[dashboards] / "ml-processing.json").is_file()
    assert (ROOT / grafana["/etc/grafana/provisioning"] / "datasources/prometheus.yml").is_file()

    prometheus = mounts("prometheus")
    config = yaml.safe_load((ROOT / prometheus["/etc/prometheus/prometheus.yml"]).read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "ml-processing" and job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["ml-processing:8006"]}]
    token_file = Path(job["authorization"]["credentials_file"])
    assert prometheus[str(token_file.parent)] == "metrics_token" == mounts("metrics-token")["/secrets"]
    assert f"/secrets/{token_file.name}" in services["metrics-token"]["command"][0]
    assert 'job="ml-processing"' in str(load())  # the dashboard's `up` panel names the job


def test_prometheus_own_parser_accepts_the_config_and_every_expression(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:  # skipped on a developer's machine without it; CI installs it
        if os.environ.get("CI"):
            pytest.fail("promtool (Prometheus) is not installed (CI installs it: .ci/run)")
        pytest.skip("promtool (Prometheus) is not installed")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query:{i}", "expr": interpolate(expr)}
        for i, (_, expr) in enumerate(expressions(load()))]}]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules), encoding="utf-8")
    checked = subprocess.run(["promtool", "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = (ROOT / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8")
    (tmp_path / "metrics.token").write_text("mlp_test\n", encoding="utf-8")
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/secrets/metrics.token", str(tmp_path / "metrics.token")), encoding="utf-8")
    checked = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
