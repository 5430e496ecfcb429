"""The container (Dockerfile, docker-compose.yml): authentication on, every interface bound, the whole data
directory one volume; and the image's own start command, run here in a temporary data directory with the
image's environment: the first start creates the keys and an admin token (printed once, never logged),
refuses requests without it, and a second start on the same data keeps the keys, the token and the data."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import zmq

from ml_processing.bus import codec
from ml_processing.bus.mdp import CLIENT, REQUEST
from ml_processing.core.config import load_config
from ml_processing.core.security.exposure import check_exposure
from tests.core.helpers import free_ports
from tests.deploy.container import ROOT, compose, compose_env, dockerfile, runtime
from tests.support.models import NAMES, xgb_artifact

#: The seed's variables (core/config.py): not MLP_*, but read as configuration all the same.
SEED_VARIABLES = {"ENV", "LOG_LEVEL", "MODEL_CACHE_SIZE", "FEATURE_CACHE_TTL", "PREDICTION_CACHE_TTL"}
START_S = 120.0  # the first start trains the default models
STOP_S = 40.0
TOKEN = re.compile(r"^mlp_\S+$")


def test_the_image_turns_authentication_on_binds_every_interface_and_keeps_its_data_in_one_volume() -> None:
    image = runtime()
    env = image.env
    assert env["MLP_SECURITY_AUTH"] == "true" and env["MLP_SECURITY_BOOTSTRAP_ADMIN"] == "true"
    assert env["MLP_EDGE_HOST"] == "0.0.0.0"
    for key in ("MLP_BUS_BROKER_BIND", "MLP_BUS_PUB_IN", "MLP_BUS_PUB_OUT"):
        assert env[key].startswith("tcp://0.0.0.0:"), key
    assert image.json_args("VOLUME") == [env["MLP_SERVICE_DATA_DIR"]] == ["/data"]
    assert image.args("USER") and image.args("USER")[-1] not in ("root", "0")
    assert image.json_args("CMD") == ["ml-processing", "serve"]
    assert f"plugins.toml {env['MLP_CONFIG']}" in image.args("COPY")
    assert "8006" in image.args("EXPOSE")[0].split()

    cfg = load_config(ROOT / "plugins.toml", environ=env)  # the image's configuration, as the service reads it
    assert cfg.security.auth and cfg.security.bootstrap_admin and cfg.data_path == Path("/data")
    check_exposure(cfg)  # every interface is allowed: authentication is on
    # everything the service writes lives under the data directory, so inside the one volume
    for plugin in ("indicators", "models", "features"):
        for key, value in cfg.plugins.sections[plugin].options.items():
            if key.endswith(("_file", "directory")):
                assert not Path(str(value)).is_absolute(), f"[plugins.{plugin}] {key} = {value} leaves the volume"
    assert not Path(cfg.security.directory).is_absolute()


def test_the_build_stage_copies_every_folder_the_package_is_built_from() -> None:
    build = dockerfile()[0]
    copied = {args.split()[0] for args in build.args("COPY")}
    with open(ROOT / "pyproject.toml", "rb") as fh:
        folders = {folder.split("/")[0] for folder in tomllib.load(fh)["tool"]["setuptools"]["package-dir"].values()}
    assert folders <= copied, f"the wheel would miss {sorted(folders - copied)}"


def test_compose_keeps_the_whole_data_directory_in_one_named_volume_with_authentication_on() -> None:
    spec = compose()
    service = spec["services"]["ml-processing"]
    env = {**runtime().env, **compose_env(service)}
    assert env["MLP_SECURITY_AUTH"] == "true" and env["MLP_EDGE_HOST"] == "0.0.0.0"
    (volume,) = service["volumes"]  # one volume: models, pipelines, market state, keys, tokens, audit.log
    name, target = volume.split(":")[:2]
    assert name in spec["volumes"] and target == env["MLP_SERVICE_DATA_DIR"] == "/data"
    assert "8006:8006" in service["ports"]
    assert "/health" in " ".join(service["healthcheck"]["test"])
    unknown = {k for k in compose_env(service) if k.startswith("MLP_") or k in SEED_VARIABLES}
    cfg = load_config(ROOT / "plugins.toml", environ={k: env[k] for k in unknown | set(runtime().env)})
    assert cfg.security.auth and cfg.service.log_level == "warning"
    limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
    assert "cpus" not in limits  # a CPU limit above the host's count refuses to start the container


# -- the image's start command, run here -------------------------------------------------------------


@dataclass
class Container:
    """The start command running as the image runs it, on loopback-reachable ports of this host."""

    process: subprocess.Popen[bytes]
    data: Path
    url: str
    broker: str
    stdout: Path
    stderr: Path

    def output(self) -> tuple[str, str]:
        return self.stdout.read_text(encoding="utf-8"), self.stderr.read_text(encoding="utf-8")


def image_environment(data: Path, ports: list[int]) -> dict[str, str]:
    """The image's ENV with only the paths of this host and free ports put in: the same bind address, the
    same authentication settings, the repository's plugins.toml (the file the image copies)."""
    image = runtime().env
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLP_") and k not in SEED_VARIABLES}
    env.update(image)
    edge, broker, pub_in, pub_out = ports
    env.update({
        "MLP_CONFIG": str(ROOT / "plugins.toml"),
        "MLP_SERVICE_DATA_DIR": str(data),
        "MLP_EDGE_PORT": str(edge),
        "MLP_BUS_BROKER_BIND": image["MLP_BUS_BROKER_BIND"].rsplit(":", 1)[0] + f":{broker}",
        "MLP_BUS_PUB_IN": image["MLP_BUS_PUB_IN"].rsplit(":", 1)[0] + f":{pub_in}",
        "MLP_BUS_PUB_OUT": image["MLP_BUS_PUB_OUT"].rsplit(":", 1)[0] + f":{pub_out}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    return env


@contextmanager
def started(data: Path, logs: Path) -> Iterator[Container]:
    ports = free_ports(4)
    logs.mkdir(parents=True, exist_ok=True)
    stdout, stderr = logs / "stdout", logs / "stderr"
    command = runtime().json_args("CMD")
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        process = subprocess.Popen(command, env=image_environment(data, ports), stdout=out, stderr=err,
                                   cwd=logs)
    container = Container(process, data, f"http://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[1]}",
                          stdout, stderr)
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert process.poll() is None, f"the service exited {process.returncode}: {container.output()[1][-3000:]}"
            try:
                if requests.get(f"{container.url}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, f"no /health after {START_S} s: {container.output()[1][-3000:]}"
            time.sleep(0.25)
        yield container
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # as `docker stop` does
            try:
                process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_S)
    assert process.returncode == 0, f"exit {process.returncode} on SIGTERM: {container.output()[1][-3000:]}"


def admin_token(stdout: str) -> str:
    lines = stdout.splitlines()
    (where,) = [i for i, line in enumerate(lines) if "admin token" in line]
    token = lines[where + 1].strip()
    assert TOKEN.match(token), lines[where + 1]
    return token


def mdp_reply(broker: str, curve: tuple[str, str, str] | None = None, timeout_ms: int = 1500) -> bytes | None:
    """One ``kernel.ping`` over MDP from a plain DEALER; the reply body, or None when nothing came back."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            server, public, secret = curve
            sock.setsockopt(zmq.CURVE_SERVERKEY, server.encode())
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public.encode())
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret.encode())
        sock.connect(broker)
        sock.send_multipart([CLIENT, REQUEST, b"kernel", codec.encode_request("ping", {})])
        if not sock.poll(timeout_ms):
            return None
        reply: bytes = sock.recv_multipart()[-1]
        return reply
    finally:
        ctx.destroy(linger=0)


def client_key(container: Container, out: Path) -> tuple[str, str, str]:
    """A read key made by ``ml-processing keys client`` on the container's data: (server, public, secret)."""
    env = image_environment(container.data, free_ports(4))
    made = subprocess.run(["ml-processing", "keys", "client", "probe", "--role", "read", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key = json.loads(out.read_text(encoding="utf-8"))
    return key["server"], key["public"], key["secret"]


def test_the_start_command_creates_keys_and_an_admin_token_and_refuses_requests_without_them(tmp_path: Path
                                                                                            ) -> None:
    data = tmp_path / "data"  # the volume
    auth = {"Authorization": "Bearer {}"}
    with started(data, tmp_path / "first") as first:
        token = admin_token(first.output()[0])
        auth = {"Authorization": f"Bearer {token}"}
        # where the keys and the token are: in the volume, the token only as a salted hash
        security = data / "security"
        assert (security / "server.key").is_file() and (security / "tokens.json").is_file()
        assert token.split("_")[-1] not in (security / "tokens.json").read_text(encoding="utf-8")
        # no token: refused, with a challenge; /health stays public (the health check needs no token)
        for method, path in (("GET", "/api/v1/plugins"), ("GET", "/metrics"),
                             ("POST", "/api/v1/models/x/promote"), ("DELETE", "/api/v1/models/x/versions/1")):
            refused = requests.request(method, first.url + path, json={"version": 1}, timeout=10)
            assert refused.status_code == 401, (method, path, refused.text)
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = requests.get(first.url + "/api/v1/plugins", timeout=10, headers={"Authorization": "Bearer mlp_x_y"})
        assert wrong.status_code == 401
        # ZeroMQ without a key: nothing answers (the broker speaks CURVE only); with a key made by the
        # command an operator runs in the container (`docker compose exec ... keys client`), the broker answers
        assert mdp_reply(first.broker) is None
        assert mdp_reply(first.broker, client_key(first, tmp_path / "probe.key"), timeout_ms=10_000) is not None
        # the admin token works, and what it does lands in the volume
        assert requests.get(first.url + "/api/v1/plugins", headers=auth, timeout=10).status_code == 200
        body = {"kind": "xgboost", "format": "json", "features": NAMES,
                "artifact": base64.b64encode(xgb_artifact("json")).decode()}
        created = requests.post(first.url + "/api/v1/models/survivor/versions", json=body, headers=auth, timeout=60)
        assert created.status_code == 200, created.text
        server_key = (security / "server.key").read_bytes()
    stdout, stderr = first.output()
    assert stdout.count(token) == 1 and token not in stderr  # printed once, never in a log line
    assert str(security / "tokens.json") in stderr  # the log says where the token store is
    assert "survivor" in (data / "audit.log").read_text(encoding="utf-8")

    with started(data, tmp_path / "second") as second:  # `docker compose down && up`: the same volume
        assert "admin token" not in second.output()[0]  # the token is never printed again
        assert (security / "server.key").read_bytes() == server_key
        model = requests.get(second.url + "/api/v1/models/survivor", headers=auth, timeout=10)
        assert model.status_code == 200 and [v["version"] for v in model.json()["versions"]] == [1]
        assert requests.get(second.url + "/api/v1/plugins", timeout=10).status_code == 401
    stdout, stderr = second.output()
    assert token not in stdout + stderr
