"""Keys: who may do what, over REST and ZeroMQ alike, with clients written against the documented protocol
(plain pyzmq with CURVE socket options, aiohttp with bearer tokens)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import zmq
import zmq.asyncio

from ml_processing.bus import codec, topics
from ml_processing.bus.mdp import CLIENT, READY, REQUEST, WORKER
from ml_processing.core.config import Config, SecurityConfig
from ml_processing.core.errors import ConfigError
from ml_processing.core.kernel import Kernel
from ml_processing.core.security import shared
from ml_processing.core.security.audit import AuditLog
from ml_processing.core.security.exposure import check_exposure
from ml_processing.core.security.keys import KeyRing
from ml_processing.core.security.tokens import TokenStore
from tests.conftest import ROOT, make_config
from tests.core.helpers import running, wait_until
from tests.support.models import xgb_artifact

ROLES = {"reader": ["read"], "computer": ["compute"], "admin": ["admin"]}


def secured(tmp_path: Path, **security: Any) -> Config:
    cfg = make_config(tmp_path)
    return dataclasses.replace(cfg, security=SecurityConfig(auth=True, **security))


@dataclasses.dataclass
class Principals:
    tokens: dict[str, str]
    keys: dict[str, tuple[str, str]]  # name -> (public, secret)
    server: str


def principals(cfg: Config) -> Principals:
    folder = cfg.data_path / cfg.security.directory
    store, ring = TokenStore(folder / "tokens.json"), KeyRing(folder)
    tokens = {name: store.add(name, roles) for name, roles in ROLES.items()}
    keys = {name: ring.add_client(name, roles) for name, roles in ROLES.items()}
    keys["worker"] = ring.add_client("worker", ["worker"], ["allowed-svc"])
    server, _ = ring.server()
    return Principals(tokens, {k: (p, s) for k, (p, s) in keys.items() if s is not None}, server)


@pytest.fixture
async def secure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Kernel, Principals]]:
    monkeypatch.setattr(shared, "BACKSTOP_S", 3600.0)  # only the stamp tells the service of a change
    cfg = secured(tmp_path)
    who = principals(cfg)
    async with running(cfg) as kernel:
        yield kernel, who


def curve_socket(ctx: zmq.asyncio.Context, kind: int, who: Principals, name: str | None) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if name is not None:
        public, secret = who.keys[name]
        sock.setsockopt(zmq.CURVE_SERVERKEY, who.server.encode())
        sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode())
        sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode())
    return sock


async def mdp_call(sock: zmq.asyncio.Socket, service: str, op: str, args: dict[str, Any] | None = None,
                   timeout: float = 5.0) -> dict[str, Any] | None:
    """One RFC 18 request on a DEALER; the decoded reply body, or None when nothing came back."""
    await sock.send_multipart([CLIENT, REQUEST, service.encode(), codec.encode_request(op, args or {})])
    if not await sock.poll(int(timeout * 1000)):
        return None
    reply: dict[str, Any] = codec.unpackb((await sock.recv_multipart())[-1])
    return reply


def admin_ops(kernel: Kernel) -> list[tuple[str, str]]:
    return sorted((name, op) for name, cell in kernel.cells.items()
                  for op, spec in cell.actor_cls.declarations().items() if spec.role == "admin")


async def test_every_admin_op_is_forbidden_to_read_and_compute_keys_over_mdp(secure: tuple[Kernel, Principals]
                                                                            ) -> None:
    kernel, who = secure
    ops = admin_ops(kernel)
    assert len(ops) >= 15
    before = {name: cell.requests for name, cell in kernel.cells.items()}
    ctx = zmq.asyncio.Context()
    try:
        for name in ("reader", "computer"):
            sock = curve_socket(ctx, zmq.DEALER, who, name)
            sock.connect(kernel.endpoints["broker"][0])
            for service, op in ops:
                reply = await mdp_call(sock, service, op, {})
                assert reply is not None and reply["ok"] is False, (name, service, op)
                assert reply["error"]["code"] == "forbidden", (name, service, op, reply)
            sock.close()
        assert {name: cell.requests for name, cell in kernel.cells.items()} == before  # no actor saw one
        admin = curve_socket(ctx, zmq.DEALER, who, "admin")
        admin.connect(kernel.endpoints["broker"][0])
        reply = await mdp_call(admin, "indicators", "subscribe", {"indicators": ["SMA"]})
        assert reply is not None and reply["ok"] is True
        reader = curve_socket(ctx, zmq.DEALER, who, "reader")
        reader.connect(kernel.endpoints["broker"][0])
        assert await mdp_call(reader, "kernel", "ping") == {"ok": True, "result": "pong"}
        admin.close()
        reader.close()
    finally:
        ctx.destroy(linger=0)


async def test_every_admin_route_is_forbidden_to_read_and_compute_tokens(secure: tuple[Kernel, Principals]) -> None:
    kernel, who = secure
    roles = {(name, op): spec.role for name, cell in kernel.cells.items()
             for op, spec in cell.actor_cls.declarations().items()}
    routes = [r for r in kernel.routes if roles.get((r.service, r.op)) == "admin"]
    assert len(routes) >= 10
    async with aiohttp.ClientSession() as http:
        for name in ("reader", "computer"):
            headers = {"Authorization": f"Bearer {who.tokens[name]}"}
            for route in routes:
                path = route.path.replace("{", "").replace("}", "")  # any value: refused before it is read
                async with http.request(route.method, kernel.edge_url + path, json={} if route.has_body else None,
                                        headers=headers) as resp:
                    assert resp.status == 403, (name, route.method, route.path, await resp.text())
                    assert (await resp.json())["error"]["code"] == "forbidden"
        async with http.get(kernel.edge_url + "/api/v1/ping",
                            headers={"Authorization": f"Bearer {who.tokens['reader']}"}) as resp:
            assert resp.status == 200 and await resp.json() == "pong"


async def test_no_token_is_401_with_a_challenge_and_public_routes_stay_open(secure: tuple[Kernel, Principals]
                                                                           ) -> None:
    kernel, who = secure
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer mlp_0_nope"}, {"Authorization": "Basic abc"}):
            async with http.get(kernel.edge_url + "/api/v1/ping", headers=headers) as resp:
                assert resp.status == 401
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await resp.json())["error"]["code"] == "unauthorized"
        async with http.post(kernel.edge_url + "/api/v1/indicators", data=b"x" * 1000) as resp:
            assert resp.status == 401  # refused before the body is read
        async with http.get(kernel.edge_url + "/health") as resp:
            assert resp.status == 200
        async with http.get(kernel.edge_url + "/api/v1/openapi.json") as resp:
            assert resp.status == 401
        async with http.get(kernel.edge_url + "/api/v1/openapi.json",
                            headers={"Authorization": f"Bearer {who.tokens['reader']}"}) as resp:
            assert resp.status == 200


async def test_revoking_a_token_takes_effect_at_once(secure: tuple[Kernel, Principals]) -> None:
    kernel, who = secure
    headers = {"Authorization": f"Bearer {who.tokens['computer']}"}
    store = TokenStore(kernel.config.data_path / "security" / "tokens.json")
    async with aiohttp.ClientSession() as http:
        async with http.get(kernel.edge_url + "/api/v1/ping", headers=headers) as resp:
            assert resp.status == 200
        assert store.revoke("computer") == 1
        async with http.get(kernel.edge_url + "/api/v1/ping", headers=headers) as resp:
            assert resp.status == 401


def security_command(kernel: Kernel, *argv: str) -> subprocess.CompletedProcess[str]:
    """``ml-processing tokens|keys ...`` in another process, on the running kernel's data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_")}
    env["MLP_SERVICE_DATA_DIR"] = str(kernel.config.data_path)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "ml_processing.core.cli", *argv], capture_output=True, text=True,
                          timeout=60, env=env, cwd=kernel.config.data_path, check=True)


async def test_the_token_commands_take_effect_at_the_next_request(secure: tuple[Kernel, Principals]) -> None:
    kernel, who = secure
    async with aiohttp.ClientSession() as http:
        async def status(token: str) -> int:
            async with http.get(kernel.edge_url + "/api/v1/ping", headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status

        assert await status(who.tokens["computer"]) == 200
        security_command(kernel, "tokens", "revoke", "computer")
        assert await status(who.tokens["computer"]) == 401  # at once: no wait, no retry
        assert await status(who.tokens["reader"]) == 200
        added = security_command(kernel, "tokens", "add", "late", "--role", "read").stdout.strip()
        assert await status(added) == 200
        security_command(kernel, "tokens", "revoke", "late")
        assert await status(added) == 401
        for _ in range(3):  # again and again: each change is seen by the very next request
            token = security_command(kernel, "tokens", "add", "again", "--role", "read").stdout.strip()
            assert await status(token) == 200
            security_command(kernel, "tokens", "revoke", token.split("_")[1])  # by id
            assert await status(token) == 401


async def test_a_key_revoked_by_the_command_is_refused_at_the_next_request(secure: tuple[Kernel, Principals]) -> None:
    kernel, who = secure
    ctx = zmq.asyncio.Context()
    try:
        sock = curve_socket(ctx, zmq.DEALER, who, "reader")
        sock.connect(kernel.endpoints["broker"][0])
        assert await mdp_call(sock, "kernel", "ping") == {"ok": True, "result": "pong"}
        security_command(kernel, "keys", "revoke", "reader")
        reply = await mdp_call(sock, "kernel", "ping")  # the same connection, made while the key was allowed
        assert reply is not None and reply["ok"] is False and reply["error"]["code"] == "unauthorized"
        sock.close()
    finally:
        ctx.destroy(linger=0)


async def test_requests_without_a_key_never_reach_an_actor(secure: tuple[Kernel, Principals]) -> None:
    kernel, who = secure
    before = {name: cell.requests for name, cell in kernel.cells.items()}
    ctx = zmq.asyncio.Context()
    try:
        plain = curve_socket(ctx, zmq.DEALER, who, None)
        plain.connect(kernel.endpoints["broker"][0])
        assert await mdp_call(plain, "kernel", "ping", timeout=1.0) is None
        stranger = ctx.socket(zmq.DEALER)  # a key pair the service never allowed
        public, secret = zmq.curve_keypair()
        stranger.setsockopt(zmq.CURVE_SERVERKEY, who.server.encode())
        stranger.setsockopt(zmq.CURVE_PUBLICKEY, public)
        stranger.setsockopt(zmq.CURVE_SECRETKEY, secret)
        stranger.setsockopt(zmq.LINGER, 0)
        stranger.connect(kernel.endpoints["broker"][0])
        assert await mdp_call(stranger, "kernel", "ping", timeout=1.0) is None
        plain.close()
        stranger.close()
    finally:
        ctx.destroy(linger=0)
    assert {name: cell.requests for name, cell in kernel.cells.items()} == before


async def test_a_rogue_ready_is_refused_and_counted(secure: tuple[Kernel, Principals]) -> None:
    kernel, who = secure
    assert kernel.broker is not None
    ctx = zmq.asyncio.Context()
    try:
        for name, service in (("computer", "evil"), ("worker", "other-svc")):
            rogue = curve_socket(ctx, zmq.DEALER, who, name)
            rogue.connect(kernel.endpoints["broker"][0])
            await rogue.send_multipart([WORKER, READY, service.encode()])
            assert await rogue.poll(5000)  # the broker answers DISCONNECT
            rogue.close()
        await wait_until(lambda: kernel.broker is not None and kernel.broker.stats.refused_ready == 2,
                         what="both READYs refused")
        assert not kernel.broker.has_service("evil") and not kernel.broker.has_service("other-svc")
        worker = curve_socket(ctx, zmq.DEALER, who, "worker")
        worker.connect(kernel.endpoints["broker"][0])
        await worker.send_multipart([WORKER, READY, b"allowed-svc"])
        await wait_until(lambda: kernel.broker is not None and kernel.broker.has_service("allowed-svc"),
                         what="the worker key's own service")
        worker.close()
    finally:
        ctx.destroy(linger=0)


async def test_subscribing_and_publishing_need_keys(secure: tuple[Kernel, Principals]) -> None:
    kernel, who = secure
    ctx = zmq.asyncio.Context()
    try:
        keyed = curve_socket(ctx, zmq.SUB, who, "reader")
        plain = curve_socket(ctx, zmq.SUB, who, None)
        for sub in (keyed, plain):
            sub.setsockopt(zmq.SUBSCRIBE, b"indicator.")
            sub.connect(kernel.endpoints["pub_out"][0])
        rogue_pub = curve_socket(ctx, zmq.PUB, who, "reader")  # read may not publish
        pub = curve_socket(ctx, zmq.PUB, who, "computer")
        for p in (rogue_pub, pub):
            p.connect(kernel.endpoints["pub_in"][0])
        await asyncio.sleep(0.5)
        bar = {"ts": 60_000, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5, "volume": 10.0}
        await rogue_pub.send_multipart([topics.bar("ROGUE", "1m").encode(), codec.packb(bar)])
        got = None
        for i in range(50):  # until the keyed subscriber sees an update (slow joiner), bounded
            await pub.send_multipart([topics.bar("KEYED", "1m").encode(), codec.packb({**bar, "ts": 60_000 * (i + 1)})])
            if await keyed.poll(100):
                got = await keyed.recv_multipart()
                break
        assert got is not None and got[0].startswith(b"indicator.KEYED.")
        assert not await plain.poll(300)
        series = await kernel.request("indicators", "series", {})
        assert {s["symbol"] for s in series} == {"KEYED"}  # the reader key's bar never reached the service
        for sock in (keyed, plain, rogue_pub, pub):
            sock.close()
    finally:
        ctx.destroy(linger=0)


async def test_state_changes_are_in_the_audit_trail(secure: tuple[Kernel, Principals]) -> None:
    kernel, who = secure
    headers = {"Authorization": f"Bearer {who.tokens['admin']}"}
    artifact = base64.b64encode(xgb_artifact(trees=5)).decode()
    async with aiohttp.ClientSession() as http:
        for method, path, body in (
                ("POST", "/api/v1/models/audited/versions", {"kind": "xgboost", "artifact": artifact}),
                ("POST", "/api/v1/models/audited/versions", {"kind": "xgboost", "artifact": artifact}),
                ("POST", "/api/v1/models/audited/promote", {"version": 2}),
                ("DELETE", "/api/v1/models/audited/versions/1", None)):
            async with http.request(method, kernel.edge_url + path, json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
        async with http.post(kernel.edge_url + "/api/v1/models/audited/promote", json={"version": 2},
                             headers={"Authorization": f"Bearer {who.tokens['computer']}"}) as resp:
            assert resp.status == 403
    records = AuditLog(kernel.config.data_path / "audit.log").read()
    seen = [(r["principal"], r["transport"], r["op"], r["outcome"]) for r in records]
    assert seen == [("admin", "rest", "register", "ok"), ("admin", "rest", "register", "ok"),
                    ("admin", "rest", "promote", "ok"), ("admin", "rest", "delete", "ok"),
                    ("computer", "rest", "promote", "forbidden")]
    assert all(r["service"] == "models" for r in records)
    assert records[3]["target"] == {"model_id": "audited", "version": 1}
    metrics = await kernel.request("kernel", "metrics", {})
    assert "mlp_audit_records_total 5.0" in metrics


def test_listening_beyond_loopback_without_auth_is_refused(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    exposed = dataclasses.replace(cfg, edge=dataclasses.replace(cfg.edge, host="0.0.0.0"))
    with pytest.raises(ConfigError, match=r"\[edge\] host = 0.0.0.0 .* allow_insecure"):
        check_exposure(exposed)
    check_exposure(dataclasses.replace(exposed, security=SecurityConfig(allow_insecure=True)))
    check_exposure(dataclasses.replace(exposed, security=SecurityConfig(auth=True)))


async def test_an_exposed_kernel_with_auth_off_does_not_start(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    exposed = dataclasses.replace(cfg, bus=dataclasses.replace(cfg.bus, pub_out="tcp://*:0"))
    kernel = Kernel(exposed)
    with pytest.raises(ConfigError, match=r"pub_out = tcp://\*:0"):
        await kernel.start()
    assert kernel.proxy is None and kernel.broker is None  # refused before anything was bound


async def test_first_start_of_a_container_prints_an_admin_token_once(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = secured(tmp_path, bootstrap_admin=True)
    async with running(cfg):
        pass
    printed = capsys.readouterr().out
    (token,) = [line for line in printed.splitlines() if line.startswith("mlp_")]
    async with running(cfg) as kernel:
        assert "admin token" not in capsys.readouterr().out  # once, never again
        async with aiohttp.ClientSession() as http:
            async with http.get(kernel.edge_url + "/api/v1/plugins",
                                headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "edge.pem", tmp_path / "edge.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


async def test_the_edge_speaks_tls_from_the_configured_certificate(tmp_path: Path,
                                                                  certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    cfg = secured(tmp_path, tls_cert=str(cert), tls_key=str(key))
    who = principals(cfg)
    async with running(cfg) as kernel:
        assert kernel.edge_url is not None and kernel.edge_url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            async with http.get(kernel.edge_url + "/api/v1/ping", ssl=trusted,
                                headers={"Authorization": f"Bearer {who.tokens['reader']}"}) as resp:
                assert resp.status == 200 and await resp.json() == "pong"
            with pytest.raises(aiohttp.ClientError):
                async with http.get(kernel.edge_url.replace("https://", "http://") + "/health") as resp:
                    await resp.read()
