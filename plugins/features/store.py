"""Pipeline versions: immutable, saved atomically with a checksum, reloaded on start.

On disk, next to the models: ``<data_dir>/features/<name>/<version>.json``, one file per version::

    {"name", "version", "spec", "fitted", "features", "lookback", "created", "fitted_rows", "sha256"}

``sha256`` is the hash of the file's canonical JSON without it; a file whose hash does not match (altered
or truncated) is refused and logged, and every other version keeps serving. A version never changes:
creating a pipeline whose spec differs from its latest version, or fitting one, makes the next version.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_processing.sdk import BadRequest, NotFound, atomic_write, get_logger

from . import transforms
from .pipeline import Compiled, Registries, check_name, compile_spec

log = get_logger(__name__)


@dataclass
class Version:
    name: str
    number: int
    compiled: Compiled
    fitted: list[dict[str, Any]] | None  # one state per transform step; None until fitted
    created: str
    fitted_rows: int = 0

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.number}"

    @property
    def is_fitted(self) -> bool:
        return self.fitted is not None

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.number, "spec": self.compiled.spec, "fitted": self.fitted,
                "features": self.compiled.features, "inputs": self.compiled.inputs,
                "lookback": self.compiled.lookback, "created": self.created, "fitted_rows": self.fitted_rows}

    def describe(self) -> dict[str, Any]:
        """For ``GET /api/v1/features/pipeline``: everything but the fitted numbers."""
        out = self.record()
        out["fitted"] = self.is_fitted
        out["needs_fit"] = self.compiled.needs_fit
        return out


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


class Store:
    """Every pipeline's versions, in memory and under `root`."""

    def __init__(self, root: Path, registries: Registries) -> None:
        self.root = root
        self.registries = registries
        self.pipelines: dict[str, dict[int, Version]] = {}
        self.refused: dict[str, str] = {}  # file -> why it was not loaded

    def __iter__(self) -> Iterator[Version]:
        for versions in self.pipelines.values():
            yield from versions.values()

    def get(self, name: Any, version: Any = None) -> Version:
        """A version (the latest when `version` is None); `NotFound` / `BadRequest` naming what is wrong."""
        if not isinstance(name, str) or not name:
            raise BadRequest("'pipeline' must be a pipeline name (GET /api/v1/features/pipeline lists them)",
                             field="pipeline")
        if "@" in name and version is None:
            name, _, version = name.partition("@")
        versions = self.pipelines.get(name)
        if not versions:
            raise NotFound(f"no pipeline {name!r} (known: {', '.join(sorted(self.pipelines)) or 'none'})",
                           field="pipeline")
        if version is None:
            return versions[max(versions)]
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise BadRequest(f"'version' must be an integer, got {version!r:.40}", field="version") from None
        if number not in versions:
            raise NotFound(f"pipeline {name!r} has no version {number} (versions: "
                           f"{', '.join(map(str, sorted(versions)))})", field="version")
        return versions[number]

    def create(self, name: Any, spec: Any) -> tuple[Version, bool]:
        """The version for `spec`: the latest one if its spec is the same, else a new one. (version, new?)"""
        name = check_name(name)
        compiled = compile_spec(spec, self.registries)
        versions = self.pipelines.get(name, {})
        if versions:
            latest = versions[max(versions)]
            if latest.compiled.spec == compiled.spec:
                return latest, False
        fitted: list[dict[str, Any]] | None = None if compiled.needs_fit else [{} for _ in compiled.transforms]
        return self._add(Version(name, max(versions, default=0) + 1, compiled, fitted, _now())), True

    def add_fitted(self, base: Version, fitted: list[dict[str, Any]], rows: int) -> Version:
        versions = self.pipelines[base.name]
        return self._add(Version(base.name, max(versions) + 1, base.compiled, fitted, _now(), rows))

    def delete(self, name: str, version: int | None) -> list[int]:
        """Remove one version, or all of them; the deleted version numbers."""
        versions = self.pipelines.get(name, {})
        numbers = sorted(versions) if version is None else [version]
        for number in numbers:
            self._path(name, number).unlink(missing_ok=True)
            del versions[number]
        if not versions:
            self.pipelines.pop(name, None)
            try:
                (self.root / name).rmdir()
            except OSError as exc:  # not empty (a refused file stays for inspection) or already gone
                log.debug("pipeline_dir_kept", pipeline=name, error=str(exc))
        return numbers

    def _add(self, version: Version) -> Version:
        record = version.record()
        record["sha256"] = hashlib.sha256(_canonical(record)).hexdigest()
        atomic_write(self._path(version.name, version.number), _canonical(record))
        self.pipelines.setdefault(version.name, {})[version.number] = version
        log.info("pipeline_version_saved", pipeline=version.ref, fitted=version.is_fitted)
        return version

    def _path(self, name: str, number: int) -> Path:
        return self.root / name / f"{number}.json"

    def load(self) -> int:
        """Read every saved version; a bad file is refused (logged, listed in `refused`), never fatal."""
        count = 0
        for path in sorted(self.root.glob("*/*.json")):
            try:
                version = self._read(path)
            except (OSError, ValueError, KeyError, TypeError, BadRequest) as exc:
                reason = exc.message if isinstance(exc, BadRequest) else f"{type(exc).__name__}: {exc}"
                self.refused[str(path)] = reason
                log.error("pipeline_file_refused", path=str(path), reason=reason)
                continue
            self.pipelines.setdefault(version.name, {})[version.number] = version
            count += 1
        return count

    def _read(self, path: Path) -> Version:
        record = json.loads(path.read_bytes())
        if not isinstance(record, dict):
            raise ValueError("not a pipeline record")
        stored = record.pop("sha256", None)
        if stored != hashlib.sha256(_canonical(record)).hexdigest():
            raise ValueError("checksum mismatch: the file was altered or truncated")
        name, number = check_name(record["name"]), int(record["version"])
        if path.parent.name != name or path.stem != str(number):
            raise ValueError(f"file holds {name}@{number}, not what its path says")
        compiled = compile_spec(record["spec"], self.registries)
        if compiled.features != record["features"]:
            raise ValueError("its steps no longer produce the saved feature names (an extractor changed?)")
        fitted = record["fitted"]
        if fitted is not None and (not isinstance(fitted, list) or len(fitted) != len(compiled.transforms)
                                   or not all(_fits(step, state) for step, state in zip(compiled.transforms, fitted, strict=True))):
            raise ValueError("fitted state does not match the transform steps")
        return Version(name, number, compiled, fitted, str(record["created"]), int(record.get("fitted_rows", 0)))


def _fits(step: Any, state: Any) -> bool:
    """Is `state` a fitted state of the shape `step` needs (finite numbers, non-zero scales)?"""
    if step.kind not in transforms.SCALERS:
        return state == {}
    if not isinstance(state, dict) or set(state) != {"offset", "scale"}:
        return False
    values = [*state["offset"], *state["scale"]] if all(isinstance(state[k], list) for k in state) else []
    return (len(state["offset"]) == len(state["scale"]) == len(step.columns)
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            and all(v != 0 for v in state["scale"]))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
