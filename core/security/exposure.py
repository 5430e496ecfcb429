"""Safe by default: a service that listens beyond loopback with authentication off refuses to start.

>>> from ml_processing.core.config import load_config
>>> exposed(load_config(None, environ={}))
[]
>>> exposed(load_config(None, environ={"MLP_EDGE_HOST": "0.0.0.0", "MLP_BUS_PUB_IN": "tcp://*:5556"}))
['[edge] host = 0.0.0.0', '[bus] pub_in = tcp://*:5556']
"""

from __future__ import annotations

import ipaddress

from ..config import Config
from ..errors import ConfigError

_LOCAL_NAMES = frozenset({"localhost", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, ``[::1]`` too) is this machine only."""
    host = host.strip("[]")
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name, a host name: reachable from elsewhere


def _endpoint_host(endpoint: str) -> str | None:
    """The host a ZeroMQ endpoint binds (None for ipc:// and inproc://, which never leave the machine)."""
    transport, _, address = endpoint.partition("://")
    if transport not in ("tcp", "ws", "wss", "pgm", "epgm", "udp"):
        return None
    host = address.rsplit(":", 1)[0] if not address.startswith("[") else address[: address.index("]") + 1]
    return host.split(";")[-1]


def exposed(config: Config) -> list[str]:
    """Every setting that makes the service listen beyond loopback."""
    found = []
    if config.edge.enabled and not is_loopback(config.edge.host):
        found.append(f"[edge] host = {config.edge.host}")
    for key, endpoints in (("broker_bind", config.bus.broker_bind), ("pub_in", (config.bus.pub_in,)),
                           ("pub_out", (config.bus.pub_out,))):
        for endpoint in endpoints:
            host = _endpoint_host(endpoint)
            if host is not None and not is_loopback(host):
                found.append(f"[bus] {key} = {endpoint}")
    return found


def check_exposure(config: Config) -> None:
    """Raise `ConfigError` (one line naming the setting) for an exposed service with authentication off,
    unless ``[security] allow_insecure = true`` says so."""
    if config.security.auth or config.security.allow_insecure:
        return
    found = exposed(config)
    if found:
        raise ConfigError(f"{config.source}: {found[0]} listens beyond loopback with [security] auth = false: "
                          "turn auth on (docs/SECURITY.md) or set [security] allow_insecure = true")
