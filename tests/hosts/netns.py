"""Hosts for a test: Linux network namespaces made by the test itself, one per host, joined by a bridge.

`Hosts` makes a namespace per name, a bridge ``br0`` in the first one (the broker host) holding its address,
and a veth pair from each other namespace to that bridge; every host gets one address in ``10.77.0.0/24``.
Processes run in a host with `Hosts.command` (``ip netns exec NS ...``); they share the machine's process
table, so the test stops them by pid. Everything is deleted again on `close`. Needs root and iproute2;
`available` says why not when it cannot run."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

SUBNET = "10.77.0"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"mlpprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
    except subprocess.CalledProcessError as exc:
        return f"ip netns add failed: {exc.stderr.strip()}"
    _ip("netns", "del", probe)
    return None


class Hosts:
    """Namespaces named after `names` (the first is the broker host), each with an address on one bridge."""

    def __init__(self, names: Sequence[str]) -> None:
        tag = os.getpid() % 100000
        self.names = list(names)
        self.namespaces = {name: f"mlp{tag}{name}" for name in names}
        self.addresses = {name: f"{SUBNET}.{i + 1}" for i, name in enumerate(names)}
        self._made: list[str] = []
        try:
            self._make(tag)
        except BaseException:
            self.close()
            raise

    def _make(self, tag: int) -> None:
        for name in self.names:
            ns = self.namespaces[name]
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        hub = self.namespaces[self.names[0]]
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "addr", "add", f"{self.addresses[self.names[0]]}/24", "dev", "br0")
        _ip("-n", hub, "link", "set", "br0", "up")
        for i, name in enumerate(self.names[1:], start=1):
            ns, near, far = self.namespaces[name], f"m{tag}h{i}", f"m{tag}b{i}"
            _ip("link", "add", near, "type", "veth", "peer", "name", far)
            _ip("link", "set", near, "netns", ns)
            _ip("link", "set", far, "netns", hub)
            _ip("-n", hub, "link", "set", far, "master", "br0")
            _ip("-n", hub, "link", "set", far, "up")
            _ip("-n", ns, "addr", "add", f"{self.addresses[name]}/24", "dev", near)
            _ip("-n", ns, "link", "set", near, "up")

    def command(self, name: str, argv: Sequence[str]) -> list[str]:
        """`argv` run in host `name`'s network namespace."""
        return ["ip", "netns", "exec", self.namespaces[name], *argv]

    def close(self) -> None:
        for ns in reversed(self._made):  # deleting a namespace deletes its end of each veth pair
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._made.clear()
