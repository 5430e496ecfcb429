"""The default models, trained on the first start with an empty registry, so a fresh install answers the
seed's quick start (``{"features": [1.2, 0.8, -0.3, 2.1], "model": "ensemble"}``).

Deterministic: a seeded synthetic market (a random walk whose returns carry a little momentum and whose
volatility clusters, volume rising with the size of moves) goes through the built-in ``default`` feature
pipeline (fitted on it, through the ``features`` service), and the label is the direction of the next bar.
Trained on the first 80% of the rows in time order, scored on the last 20%:

* ``xgboost_default``: xgboost classifier, 100 trees of depth 4;
* ``sklearn_default``: scikit-learn random forest, 60 trees of depth 6;
* ``river_default``: river logistic regression, learned row by row;
* ``ensemble``: the average of the three.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import numpy as np

from ml_processing.sdk import MlpError, Unavailable, get_logger
from ml_processing.sdk.model import CLASSIFICATION, Described

from .kinds import river_artifact

if TYPE_CHECKING:
    from .actor import Models

log = get_logger(__name__)

SEED = 20_261_126
BARS = 6_000
NAMES = ("xgboost_default", "sklearn_default", "river_default")


def synthetic_market(n: int = BARS, seed: int = SEED) -> dict[str, np.ndarray]:
    """OHLCV of a market with momentum and volatility clustering (GARCH-like), one-minute bars."""
    rng = np.random.default_rng(seed)
    returns = np.empty(n)
    variance, previous = 1e-6, 0.0
    for i in range(n):
        variance = 2e-8 + 0.08 * previous**2 + 0.9 * variance
        previous = 0.25 * previous + np.sqrt(variance) * rng.standard_normal()
        returns[i] = previous
    close = 100 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0, np.sqrt(np.maximum(variance, 1e-8)), n))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    volume = 1_000 * (1 + 200 * np.abs(returns)) * rng.lognormal(0, 0.2, n)
    ts = 1_767_225_600_000 + 60_000 * np.arange(n, dtype=np.float64)  # 2026-01-01, UTC
    return {"ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


async def _ask(actor: Models, service: str, op: str, args: dict[str, Any]) -> Any:
    """A request to a service that may still be starting (it joins the broker when it has started)."""
    for _ in range(300):
        try:
            return await actor.request(service, op, args)
        except Unavailable:
            await asyncio.sleep(0.05)
    raise Unavailable(f"service {service!r} did not come up: the default models need it", field="defaults")


async def register_defaults(actor: Models) -> None:
    try:
        await _register(actor)
    except MlpError as exc:
        log.error("default_models_not_trained", error=exc.message)


async def _register(actor: Models) -> None:
    market = synthetic_market()
    listed = await _ask(actor, "features", "pipelines", {"pipeline": "default"})
    fitted = [v for v in listed["pipelines"][0]["versions"] if v["fitted"]]
    pipeline = fitted[-1]["name"] + f"@{fitted[-1]['version']}" if fitted else \
        (await _ask(actor, "features", "fit", {"pipeline": "default", **market}))["pipeline"]
    rows = await _ask(actor, "features", "transform", {"pipeline": pipeline, **market})
    x = np.asarray(rows["values"], dtype=np.float64)
    index = np.asarray(rows["index"])
    keep = index < len(market["close"]) - 1
    x, index = x[keep], index[keep]
    y = (market["close"][index + 1] > market["close"][index]).astype(np.int64)
    split = int(len(x) * 0.8)
    artifacts = await actor.run_in_thread(_train, x[:split], y[:split], x[split:], y[split:], rows["features"])
    kinds = actor.kinds
    for name, (kind, fmt, data, metrics) in zip(NAMES, artifacts, strict=True):
        own = Described(CLASSIFICATION, x.shape[1], [0, 1], {"model": "river.linear_model.LogisticRegression"}) \
            if kind == "river" else None
        await actor.register(name, kinds[kind], fmt, data, {"pipeline": pipeline, "metrics": metrics,
                                                            "promote": True}, {"trained_on": "synthetic"}, own)
    members = ('{"members": [' + ", ".join(f'"{n}"' for n in NAMES) + "]}").encode()
    await actor.register("ensemble", kinds["ensemble"], "json", members, {"pipeline": pipeline, "promote": True})
    log.info("default_models_registered", pipeline=pipeline, rows=len(x),
             accuracy={name: a[3]["accuracy"] for name, a in zip(NAMES, artifacts, strict=True)})


def _train(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
           names: list[str]) -> list[tuple[str, str, bytes, dict[str, float]]]:
    import skops.io as sio
    import xgboost as xgb
    from river import linear_model
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, log_loss

    def scores(proba: np.ndarray) -> dict[str, float]:
        return {"accuracy": round(float(accuracy_score(y_test, proba.argmax(axis=1))), 4),
                "log_loss": round(float(log_loss(y_test, proba, labels=[0, 1])), 4), "test_rows": len(y_test)}

    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.1, "nthread": 1, "seed": SEED,
                         "tree_method": "hist"}, xgb.DMatrix(x, label=y), num_boost_round=100)
    p = booster.predict(xgb.DMatrix(x_test))
    xgb_artifact = bytes(booster.save_raw(raw_format="ubj"))

    forest = RandomForestClassifier(n_estimators=60, max_depth=6, random_state=SEED, n_jobs=1).fit(x, y)
    forest_proba = forest.predict_proba(x_test)

    online = linear_model.LogisticRegression()
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        online.learn_one(dict(zip(names, row, strict=True)), label)
    online_proba = np.array([[1 - (q := online.predict_proba_one(dict(zip(names, row, strict=True))).get(1, 0.5)), q]
                             for row in x_test.tolist()])

    return [("xgboost", "ubj", xgb_artifact, scores(np.column_stack([1 - p, p]))),
            ("sklearn", "skops", sio.dumps(forest), scores(forest_proba)),
            ("river", "river", river_artifact(online), scores(online_proba))]
