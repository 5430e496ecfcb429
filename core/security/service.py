"""Security for one kernel: what ``[security]`` turns on, built and torn down in one place.

With ``auth`` off (the default, loopback only) nothing here runs and requests carry no principal. With it
on: the service's CURVE key pair (created on first start), the client allow-list and the token store
under ``<data_dir>/<directory>``, the ZAP handler on the kernel's ZeroMQ context, the gate the broker and
the edge ask, TLS for the edge when a certificate is configured, and the audit trail.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import zmq

from ml_processing.bus.mdp import CurveKeys

from ..config import Config
from ..errors import ConfigError
from ..log import get_logger
from ..storage import atomic_write
from .audit import AuditLog
from .exposure import check_exposure
from .gate import KernelGate
from .keys import KeyRing
from .tokens import TokenStore
from .zap import KeyAuthenticator

log = get_logger(__name__)


def load_client_keys(path: str | Path) -> CurveKeys:
    """A client key file written by ``ml-processing keys client``: the service's public key and the
    client's pair."""
    try:
        data = orjson.loads(Path(path).read_bytes())
        return CurveKeys(data["server"], data["public"], data["secret"])
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"client key file {path}: {exc}") from None


#: The allow-list name of the key a serve process gives its own worker processes (``serve --processes``).
PROCESS_KEY_NAME = "serve-processes"


class Security:
    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.security
        self.enabled = settings.auth
        self.folder = config.data_path / settings.directory
        self.tokens = TokenStore(self.folder / "tokens.json")
        self.keys = KeyRing(self.folder)
        self.audit = AuditLog(config.data_path / "audit.log") if settings.audit else None
        self.gate: KernelGate | None = None
        self._zap: KeyAuthenticator | None = None

    def check(self, mode: str) -> None:
        """Refuse an exposed service without authentication (serve mode binds; a worker only connects)."""
        if mode == "serve":
            check_exposure(self.config)

    def start(self, context: zmq.Context[Any], roles: Mapping[tuple[str, str], str]) -> None:
        """Start the ZAP handler and build the gate (authentication on only)."""
        if not self.enabled:
            return
        self._zap = KeyAuthenticator(context, self.keys)
        self._zap.start()
        self.gate = KernelGate(roles, self.tokens, self.keys, self.audit)
        self._bootstrap()
        log.info("security_on", keys=str(self.folder), tokens=len(self.tokens.list()),
                 clients=len(self.keys.clients()), audit=str(self.audit.path) if self.audit else None)

    def _bootstrap(self) -> None:
        """First start with no token (the container): an admin token, printed once, never logged."""
        if not self.config.security.bootstrap_admin or self.tokens.list():
            return
        token = self.tokens.add("admin", ["admin"])
        sys.stdout.write(f"ml-processing: admin token (shown once, stored only as a hash in "
                         f"{self.tokens.path}):\n{token}\n")
        sys.stdout.flush()
        log.warning("admin_token_created", store=str(self.tokens.path), printed="stdout, once")

    def process_keys(self, folder: Path) -> Path | None:
        """A client key file in `folder` for this serve process's own worker processes (worker and compute
        roles; the key of the previous start is replaced), or None with authentication off."""
        if not self.enabled:
            return None
        self.keys.remove(PROCESS_KEY_NAME)
        public, secret = self.keys.add_client(PROCESS_KEY_NAME, ("worker", "compute"))
        path = folder / "process-keys.json"
        atomic_write(path, orjson.dumps({"server": self.keys.server()[0], "public": public, "secret": secret}))
        return path

    @property
    def zap_refused(self) -> int:
        """Connections the ZAP handler refused (unknown key, or a role the socket needs)."""
        return self._zap.refused if self._zap is not None else 0

    @property
    def curve(self) -> tuple[str, str] | None:
        """The service's key pair for its server sockets (authentication on only)."""
        return self.keys.server() if self.enabled else None

    def client_keys(self) -> CurveKeys | None:
        """This process's keys as a client of a remote broker (worker mode, authentication on)."""
        if not self.enabled:
            return None
        path = self.config.security.client_keys
        if not path:
            raise ConfigError(f"{self.config.source}: [security] client_keys: a worker of a service with auth on "
                              "needs a client key file (ml-processing keys client NAME --role worker)")
        return load_client_keys(path)

    def ssl_context(self) -> ssl.SSLContext | None:
        settings = self.config.security
        if not settings.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{self.config.source}: [security] tls_cert/tls_key: {exc}") from None
        return context

    def stop(self) -> None:
        if self._zap is not None:
            self._zap.stop()
            self._zap = None
        if self.audit is not None:
            self.audit.close()
