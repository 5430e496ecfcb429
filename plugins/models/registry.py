"""Model versions on disk: signed manifests, verified files, an atomically moved current-version pointer.

Layout under ``<data_dir>/models``::

    .key                      32 random bytes (mode 0600): signs every manifest this service writes
    NAME/current.json         {"version": N, "history": [earlier current versions, newest last]}
    NAME/VERSION/manifest.json
    NAME/VERSION/<artifact>   model.ubj, model.json, model.skops, model.river, ensemble.json
    NAME/VERSION/model.onnx   the fast-path graph, when the kind compiles one

``manifest.json``: ``name, version, kind, format, artifact, task, classes, n_features, features`` (names)
or ``pipeline`` (NAME@VERSION of a feature pipeline), ``metrics``, ``details``, ``created``, ``files``
(name -> sha256 of every other file) and ``signature`` (HMAC-SHA256 of the rest with the key). A version is
written into a temporary directory, every file fsynced, then renamed into place; the pointer file is
replaced atomically. Loading checks the signature, then every file's hash, before the kind reads a byte:
a truncated, altered or foreign file is refused with the reason and never executed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ml_processing.sdk import BadRequest, NotFound, atomic_write, get_logger

log = get_logger(__name__)

MANIFEST = "manifest.json"
CURRENT = "current.json"
_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class Refused(Exception):
    """A version's files failed verification; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_name(name: Any, field: str = "model") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest(f"model name must be 1-64 letters, digits, '_' or '-', got {name!r:.60}", field=field)
    return name


def _canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.key = self._key()

    def _key(self) -> bytes:
        path = self.root / ".key"
        if not path.exists():
            atomic_write(path, os.urandom(32))
            path.chmod(0o600)
        key = path.read_bytes()
        if len(key) != 32:
            raise RuntimeError(f"{path} is not a 32-byte key: remove it only together with every model")
        return key

    def sign(self, manifest: Mapping[str, Any]) -> str:
        body = {k: v for k, v in manifest.items() if k != "signature"}
        return hmac.new(self.key, _canonical(body), hashlib.sha256).hexdigest()

    # -- reading ----------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))

    def versions(self, name: str) -> list[int]:
        """The versions of `name` on disk (none for a name that is not a model's: never a path elsewhere)."""
        if not _NAME.fullmatch(name):
            return []
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def pointer(self, name: str) -> dict[str, Any]:
        """``{"version": N or None, "history": [...]}``."""
        path = self.root / name / CURRENT
        if not _NAME.fullmatch(name) or not path.exists():
            return {"version": None, "history": []}
        data = json.loads(path.read_bytes())
        return {"version": data.get("version"), "history": list(data.get("history", []))}

    def manifest(self, name: str, version: int) -> dict[str, Any]:
        """The verified manifest of a version; `Refused` with the reason otherwise."""
        folder = self.root / name / str(version)
        try:
            manifest: Any = json.loads((folder / MANIFEST).read_bytes())
        except FileNotFoundError:
            raise Refused(f"{name}@{version}: no {MANIFEST}") from None
        except ValueError as exc:
            raise Refused(f"{name}@{version}: {MANIFEST} is not JSON ({exc})") from None
        if not isinstance(manifest, dict) or not hmac.compare_digest(str(manifest.get("signature", "")),
                                                                     self.sign(manifest)):
            raise Refused(f"{name}@{version}: the manifest's signature does not match: not written by this "
                          "service, or altered")
        for filename, digest in manifest["files"].items():
            path = folder / filename
            try:
                actual = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                raise Refused(f"{name}@{version}: {filename} is missing") from None
            if actual != digest:
                raise Refused(f"{name}@{version}: {filename} does not match its sha256 (truncated or altered)")
        return dict(manifest)

    def folder(self, name: str, version: int) -> Path:
        return self.root / name / str(version)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for name in self.names():
            for version in self.versions(name):
                yield name, version

    # -- writing ----------------------------------------------------------------------------------------

    def write(self, name: str, manifest: dict[str, Any], files: Mapping[str, bytes],
              derive: Any = None) -> dict[str, Any]:
        """Write a new version (the next number) atomically; `derive(tmp_dir, manifest)` may add files
        computed from the others (the ONNX graph). Returns the signed manifest."""
        check_name(name)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        version = max(self.versions(name), default=0) + 1
        tmp = folder / f".tmp-{version}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            manifest = {**manifest, "name": name, "version": version, "created": _now()}
            for filename, data in files.items():
                (tmp / filename).write_bytes(data)
            if derive is not None:
                for filename, data in derive(tmp, manifest).items():
                    (tmp / filename).write_bytes(data)
            manifest["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tmp.iterdir())}
            manifest["signature"] = self.sign(manifest)
            (tmp / MANIFEST).write_bytes(json.dumps(manifest, indent=1, sort_keys=True).encode())
            for path in tmp.iterdir():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
            _fsync_dir(tmp)
            os.rename(tmp, folder / str(version))
            _fsync_dir(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("model_version_written", model=name, version=version, kind=manifest.get("kind"))
        return manifest

    def set_pointer(self, name: str, version: int, history: list[int]) -> None:
        atomic_write(self.root / name / CURRENT, _canonical({"version": version, "history": history[-100:]}))

    def delete(self, name: str, version: int) -> None:
        folder = self.folder(name, version)
        if not folder.is_dir():
            raise NotFound(f"model {name!r} has no version {version}", field="version")
        trash = folder.with_name(f".deleted-{version}-{time.monotonic_ns()}")
        os.rename(folder, trash)  # atomic: the version is gone at once, the files after
        shutil.rmtree(trash, ignore_errors=True)

    def delete_model(self, name: str) -> None:
        folder = self.root / name
        trash = folder.with_name(f".deleted-{name}-{time.monotonic_ns()}")
        os.rename(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def sweep(self) -> None:
        """Remove what an interrupted write or delete left behind."""
        for path in list(self.root.glob(".deleted-*")) + list(self.root.glob("*/.tmp-*")) + \
                list(self.root.glob("*/.deleted-*")):
            shutil.rmtree(path, ignore_errors=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
