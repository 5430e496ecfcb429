"""The models the service serves: each model's current version loaded, other versions loaded on request,
and every change of the registry (register, promote, roll back, delete, checkpoint).

Every model's current version is loaded at start, before the service is ready (the load time of each is
in ``/health/models``). A version that fails verification is refused with the reason and the model keeps
serving the newest version that loads. Swapping versions replaces one reference: a request that already
holds the old predictor finishes on it. Whoever keeps state per model (the prediction cache, ensemble
weights) follows the swaps through `Catalog.on_change`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ml_processing.sdk import BadRequest, MlpError, NotFound, Unavailable, get_logger
from ml_processing.sdk.model import Described, ModelKind, Predictor

from .registry import ModelStore, Refused

log = get_logger(__name__)

Run = Callable[..., Awaitable[Any]]
#: Called with a model's name and its new serving version (None: it has none) after every swap.
Listener = Callable[[str, "Loaded | None"], None]


@dataclass
class Loaded:
    """One loaded version: its manifest and its predictor."""

    name: str
    version: int
    manifest: dict[str, Any]
    predictor: Predictor
    load_ms: float

    @property
    def features(self) -> list[str] | None:
        names = self.manifest.get("features")
        return list(names) if names else None

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {"model": self.name, "version": self.version, "kind": m["kind"], "format": m["format"],
                "task": m["task"], "classes": m.get("classes"), "n_features": m["n_features"],
                "features": m.get("features"), "pipeline": m.get("pipeline"), "metrics": m.get("metrics", {}),
                "details": m.get("details", {}), "created": m["created"], "load_ms": round(self.load_ms, 3),
                "paths": self.predictor.paths()}


class Catalog:
    """The loaded versions of every model in `store`, and the changes of the registry."""

    def __init__(self, store: ModelStore, kinds: Mapping[str, ModelKind], options: Mapping[str, Any],
                 run_in_thread: Run) -> None:
        self.store = store
        self.kinds = kinds
        self.options = {**options, "resolve": self.resolve}
        self.run_in_thread = run_in_thread
        self.current: dict[str, Loaded] = {}
        self.others: dict[tuple[str, int], Loaded] = {}  # non-current versions loaded on request
        self.refused: dict[str, dict[int, str]] = {}
        self.on_change: list[Listener] = []

    # -- loading ----------------------------------------------------------------------------------------

    def load(self, name: str, version: int) -> Loaded:
        """Verify and load one version; `Refused` with the reason."""
        start = time.perf_counter()
        manifest = self.store.manifest(name, version)
        kind = self.kinds.get(manifest.get("kind", ""))
        if kind is None:
            raise Refused(f"{name}@{version}: no plugin registers model kind {manifest.get('kind')!r}")
        try:
            predictor = kind.load(self.store.folder(name, version), manifest, self.options)
        except Exception as exc:  # the kind's library failed on verified files: refuse, keep serving
            raise Refused(f"{name}@{version}: {manifest['kind']} could not load it: {type(exc).__name__}: {exc}") from exc
        return Loaded(name, version, manifest, predictor, (time.perf_counter() - start) * 1000)

    def load_all(self) -> None:
        """Load every model's serving version (at start)."""
        names = self.store.names()
        start = time.perf_counter()
        for kind in {self._kind_on_disk(n) for n in names} & set(self.kinds):
            self.kinds[kind].prepare()
        if names:
            log.info("model_libraries_ready", ms=round((time.perf_counter() - start) * 1000, 1))
        for name in names:
            self._load_serving(name)

    def _kind_on_disk(self, name: str) -> str | None:
        pointer = self.store.pointer(name)
        version = pointer["version"] or max(self.store.versions(name), default=0)
        try:
            return str(self.store.manifest(name, version)["kind"]) if version else None
        except Refused:
            return None

    def _load_serving(self, name: str) -> None:
        """Load the current version, or (refused) the newest earlier one that loads."""
        pointer = self.store.pointer(name)
        versions = self.store.versions(name)
        order = [v for v in [pointer["version"], *reversed(pointer["history"])] if v in versions]
        order += [v for v in reversed(versions) if v not in order]
        for version in order:
            try:
                loaded = self.load(name, version)
            except Refused as exc:
                self.refused.setdefault(name, {})[version] = exc.reason
                log.error("model_version_refused", model=name, version=version, reason=exc.reason)
                continue
            self.current[name] = loaded
            log.info("model_loaded", model=name, version=version, kind=loaded.manifest["kind"],
                     load_ms=round(loaded.load_ms, 1), paths=loaded.predictor.paths(),
                     fallback=version != pointer["version"])
            return

    # -- lookups ----------------------------------------------------------------------------------------

    def get(self, name: str, version: int | None = None, field: str = "model") -> Loaded:
        """The serving version of `name`, or its `version`: `NotFound` / `Unavailable` naming `field`."""
        if version is None:
            loaded = self.current.get(name)
            if loaded is None:
                if name in self.refused:
                    raise Unavailable(f"model {name!r} has no version that loads: "
                                      f"{'; '.join(self.refused[name].values())}", field=field)
                raise NotFound(f"no model {name!r} (models: {', '.join(sorted(self.current)) or 'none'})",
                               field=field)
            return loaded
        current = self.current.get(name)
        if current is not None and current.version == version:
            return current
        loaded = self.others.get((name, version))
        if loaded is None:
            versions = self.store.versions(name)
            if not versions:
                raise NotFound(f"no model {name!r:.80}", field=field)
            if version not in versions:
                raise NotFound(f"model {name!r} has no version {version}", field="version")
            try:
                loaded = self.load(name, version)
            except Refused as exc:
                raise Unavailable(exc.reason, field="version") from None
            self.others[(name, version)] = loaded
        return loaded

    def resolve(self, ref: str) -> Predictor:
        """A model by ``name`` (its current version) or ``name@version``: for ensembles' members."""
        name, _, version = ref.partition("@")
        return self.get(name, int(version) if version.isdigit() else None).predictor

    def built_on(self, name: str) -> set[str]:
        """The serving models built on `name` (ensembles naming it as a member), through any depth."""
        found: set[str] = set()
        todo = [name]
        while todo:
            member = todo.pop()
            for other, loaded in self.current.items():
                if other not in found and any(ref.partition("@")[0] == member for ref in loaded.predictor.members):
                    found.add(other)
                    todo.append(other)
        return found

    def names(self) -> list[str]:
        return sorted(set(self.store.names()) | set(self.current))

    def status(self, name: str) -> str:
        loaded = self.current.get(name)
        if loaded is None:
            return "unavailable"
        return "ok" if loaded.version == self.store.pointer(name)["version"] else "degraded"

    def summary(self, name: str) -> dict[str, Any]:
        loaded = self.current.get(name)
        pointer = self.store.pointer(name)
        out: dict[str, Any] = {"model": name, "current": pointer["version"], "versions": self.store.versions(name),
                               "version": loaded.version if loaded else None,
                               "serving": loaded.version if loaded else None, "status": self.status(name)}
        if loaded is not None:
            out.update({k: v for k, v in loaded.describe().items() if k not in ("model", "version")})
        if name in self.refused:
            out["refused"] = {str(v): reason for v, reason in self.refused[name].items()}
        return out

    def details(self, name: str) -> dict[str, Any]:
        """`summary` with every version on disk and the promotion history."""
        if not self.store.versions(name):
            raise NotFound(f"no model {name!r}", field="model_id")
        versions: list[dict[str, Any]] = []
        for version in self.store.versions(name):
            try:
                manifest = self.store.manifest(name, version)
                versions.append({"version": version, "kind": manifest["kind"], "created": manifest["created"],
                                 "metrics": manifest.get("metrics", {}), "pipeline": manifest.get("pipeline"),
                                 "files": manifest["files"], "status": "ok"})
            except Refused as exc:
                versions.append({"version": version, "status": "refused", "reason": exc.reason})
        return {**self.summary(name), "history": self.store.pointer(name)["history"], "versions": versions}

    # -- changes ----------------------------------------------------------------------------------------

    async def add(self, name: str, kind: ModelKind, fmt: str, data: bytes, described: Described,
                  binding: Mapping[str, Any], promote: bool | None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write, load and maybe promote a version described by `described` (checked by its kind, or made by
        this service). `binding`: ``features`` (names) and ``pipeline``; ``metrics``."""
        task, n_features, classes = described.task, described.n_features, described.classes
        if described.members:
            task, n_features, classes = self._shape_of(described.members)
        names = binding.get("features")
        if names is not None and n_features and len(names) != n_features:
            raise BadRequest(f"{len(names)} feature names for a model of {n_features} features", field="features")
        manifest = {"kind": kind.name, "format": fmt, "artifact": kind.artifact_name(fmt), "task": task,
                    "classes": classes, "n_features": n_features, "features": names,
                    "metrics": dict(binding.get("metrics") or {}), "details": described.details, **(extra or {})}
        if names and binding.get("pipeline"):
            manifest["pipeline"] = binding["pipeline"]
        return await self.write(name, kind, manifest, data, promote)

    async def write(self, name: str, kind: ModelKind, manifest: dict[str, Any], data: bytes,
                    promote: bool | None) -> dict[str, Any]:
        """Write a checked version (compiling the fast path), load it (both off the event loop), maybe promote
        it."""
        written = await self.run_in_thread(self.store.write, name, manifest, {manifest["artifact"]: data},
                                           kind.compile)
        version = written["version"]
        try:
            loaded = await self.run_in_thread(self.load, name, version)
        except Refused as exc:
            raise BadRequest(f"the new version does not load: {exc.reason}", field="artifact") from None
        if promote is None:
            promote = name not in self.current
        if promote:
            self.promote(loaded)
        else:
            self.others[(name, version)] = loaded
        return {**loaded.describe(), "current": self.store.pointer(name)["version"], "promoted": bool(promote)}

    def _shape_of(self, members: list[str]) -> tuple[str, int, list[Any] | None]:
        shapes = []
        for ref in members:
            try:
                predictor = self.resolve(ref)
            except MlpError as exc:
                raise BadRequest(f"ensemble member {ref!r}: {exc.message}", field="artifact") from None
            shapes.append((predictor.task, predictor.n_features, predictor.classes))
        if len(set(map(repr, shapes))) != 1:
            raise BadRequest(f"ensemble members disagree on task, feature count or classes: {shapes}", field="artifact")
        task, n_features, classes = shapes[0]
        return task, n_features, classes

    def promote(self, loaded: Loaded) -> None:
        """Make `loaded` the current version: pointer first (durable), then the serving reference."""
        name = loaded.name
        pointer = self.store.pointer(name)
        history = pointer["history"]
        if pointer["version"] is not None and pointer["version"] != loaded.version:
            history = [*history, pointer["version"]]
        self.store.set_pointer(name, loaded.version, history)
        previous = self._serve(loaded)
        self.refused.get(name, {}).pop(loaded.version, None)
        log.info("model_promoted", model=name, version=loaded.version, previous=previous.version if previous else None)

    def _serve(self, loaded: Loaded) -> Loaded | None:
        previous = self.current.get(loaded.name)
        self.current[loaded.name] = loaded
        self.others.pop((loaded.name, loaded.version), None)
        if previous is not None and previous.version != loaded.version:
            self.others[(loaded.name, previous.version)] = previous
        self._changed(loaded.name)
        return previous

    def _changed(self, name: str) -> None:
        for listener in self.on_change:
            listener(name, self.current.get(name))

    def rollback(self, name: str) -> None:
        """Back to the version that was current before this one."""
        pointer = self.store.pointer(name)
        history = [v for v in pointer["history"] if v in self.store.versions(name)]
        if not history:
            raise BadRequest(f"model {name!r} has no earlier current version to roll back to", field="model_id")
        target = history[-1]
        loaded = self.get(name, target)
        self.store.set_pointer(name, target, history[:-1])
        self._serve(loaded)
        log.info("model_rolled_back", model=name, version=target, previous=pointer["version"])

    def delete(self, name: str, version: int, force: bool) -> list[int]:
        """Delete one version; the current one only with `force` (then the model serves its previous).
        The versions that remain."""
        pointer = self.store.pointer(name)
        if version == pointer["version"] and not force:
            raise BadRequest(f"version {version} is the current version of {name!r}: promote another first, or "
                             "pass force=true", field="version")
        self.store.delete(name, version)
        self.others.pop((name, version), None)
        self.refused.get(name, {}).pop(version, None)
        remaining = self.store.versions(name)
        history = [v for v in pointer["history"] if v in remaining]
        if version == pointer["version"]:
            self.current.pop(name, None)
            if remaining:
                target = history[-1] if history else remaining[-1]
                self.store.set_pointer(name, target, history[:-1] if history else [])
                self._load_serving(name)
        elif pointer["version"] is not None:
            self.store.set_pointer(name, pointer["version"], history)
        if not remaining:
            self.store.delete_model(name)
            self.refused.pop(name, None)
        self._changed(name)  # a later version may take the deleted number: nothing cached of it may remain
        return remaining

    async def checkpoint(self, loaded: Loaded, metrics: Mapping[str, Any], keep: int) -> None:
        """Save an online model's learned state as a new, current version; keep the newest `keep`
        checkpoints."""
        kind = self.kinds[loaded.manifest["kind"]]
        data = await self.run_in_thread(loaded.predictor.artifact)
        kept = ("kind", "format", "artifact", "task", "classes", "n_features", "features", "pipeline", "details")
        manifest = {k: loaded.manifest[k] for k in kept if k in loaded.manifest}
        manifest["metrics"] = {**loaded.manifest.get("metrics", {}), **metrics}
        manifest["checkpoint_of"] = loaded.manifest.get("checkpoint_of", loaded.version)
        await self.write(loaded.name, kind, manifest, data, True)
        name = loaded.name
        checkpoints = [v for v in self.store.versions(name)
                       if self._is_checkpoint(name, v) and v != self.current[name].version]
        for version in checkpoints[:-(keep - 1) or None]:
            self.store.delete(name, version)
            self.others.pop((name, version), None)

    def _is_checkpoint(self, name: str, version: int) -> bool:
        try:
            return "checkpoint_of" in self.store.manifest(name, version)
        except Refused:
            return False
