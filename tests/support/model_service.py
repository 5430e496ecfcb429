"""A models service to test against: its configuration (the default models off) and a scikit-learn
artifact beside the xgboost one of `tests.support.models`, trained on the same rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import skops.io as sio
from sklearn.ensemble import RandomForestClassifier

from ml_processing.core.config import Config, PluginSection
from tests.conftest import make_config
from tests.support.models import X, Y


def forest_artifact() -> bytes:
    """A small random forest over `X`, saved with skops."""
    return sio.dumps(RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0).fit(X, Y))


def models_config(tmp_path: Path, modules: tuple[str, ...] = (), **models: Any) -> Config:
    """A test configuration whose ``[plugins.models]`` section is `models` (the default models off)."""
    return make_config(tmp_path, modules=modules, sections={"models": PluginSection(True, {"defaults": False,
                                                                                            **models})})
