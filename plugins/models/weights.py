"""Adaptive ensemble weights: one `Hedge` per model built of members, bound to its predictor, saved beside
its versions (``<models>/NAME/weights.json``) so a restart keeps them.

A model is an ensemble when its predictor has ``members`` (the model-kind contract); its weights reach the
predictor through ``set_weights``, and every change is announced (`changed`) so cached predictions of that
model are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ml_processing.sdk import BadRequest, atomic_write, get_logger

from .catalog import Loaded
from .online import Hedge

log = get_logger(__name__)


class EnsembleWeights:
    def __init__(self, root: Path, eta: float, floor: float, changed: Callable[[str], None]) -> None:
        self.root = root
        self.eta = eta
        self.floor = floor
        self.changed = changed  # called with the model's name whenever its weights move
        self.hedges: dict[str, Hedge] = {}

    def bind(self, loaded: Loaded) -> Hedge | None:
        """The weights of `loaded` (read from disk once), set on its predictor; None for a single model."""
        members = list(loaded.predictor.members)
        if not members:
            return None
        name = loaded.name
        hedge = self.hedges.get(name)
        if hedge is None or hedge.members != members:
            saved = self._read(name)
            same = saved.get("members") == members
            hedge = Hedge(members, self.eta, self.floor, saved.get("weights", []) if same else [])
            hedge.updates = int(saved.get("updates", 0)) if hedge.weights and same else 0
            self.hedges[name] = hedge
        loaded.predictor.set_weights(hedge.weights)
        return hedge

    def of(self, loaded: Loaded) -> Hedge:
        """The weights of an ensemble; `BadRequest` for a model that has no members."""
        hedge = self.bind(loaded)
        if hedge is None:
            raise BadRequest(f"model {loaded.name!r} is not an ensemble", field="model_id")
        return hedge

    def update(self, loaded: Loaded, losses: list[float]) -> None:
        """One Hedge step from each member's loss on a label."""
        hedge = self.hedges[loaded.name]
        hedge.update(losses)
        loaded.predictor.set_weights(hedge.weights)
        self.changed(loaded.name)

    def reset(self, loaded: Loaded) -> Hedge:
        """Back to equal weights."""
        hedge = self.of(loaded)
        hedge.reset()
        loaded.predictor.set_weights(hedge.weights)
        self.changed(loaded.name)
        return hedge

    def save(self, name: str) -> bool:
        """Write the weights of `name` (if it has any); whether it had."""
        hedge = self.hedges.get(name)
        if hedge is None:
            return False
        atomic_write(self._path(name), json.dumps(hedge.state()).encode())
        return True

    def _path(self, name: str) -> Path:
        return self.root / name / "weights.json"

    def _read(self, name: str) -> dict[str, Any]:
        path = self._path(name)
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_bytes())
            return data if isinstance(data, dict) else {}
        except ValueError as exc:
            log.error("ensemble_weights_unreadable", model=name, error=str(exc))
            return {}

    def states(self) -> dict[str, dict[str, Any]]:
        return {m: h.state() for m, h in self.hedges.items()}

    def timelines(self) -> dict[str, list[tuple[int, list[float]]]]:
        return {m: h.timeline() for m, h in self.hedges.items()}
