"""The default models, trained on the first start with an empty registry, so a fresh install answers the
seed's quick start (``{"features": [1.2, 0.8, -0.3, 2.1], "model": "ensemble"}``).

Deterministic: the seeded synthetic market (`ml_processing.sdk.synthetic`: returns with a little momentum
and clustered volatility, volume rising with the size of moves) goes through the built-in ``default``
feature pipeline (fitted on it by the ``features`` service, which the models service `needs` at start),
and the label is the direction of the next bar. Trained on the first 80% of the rows in time order,
scored on the last 20%:

* ``xgboost_default``: xgboost classifier, 100 trees of depth 4;
* ``sklearn_default``: scikit-learn random forest, 60 trees of depth 6;
* ``river_default``: river logistic regression, learned row by row;
* ``neural_net``: a scikit-learn MLP (one hidden layer of 16 ReLU units, L-BFGS, 60 iterations: about a
  tenth of a second of CPU), converted with skl2onnx and served as an ``onnx`` model, checked by the upload
  rules like any other network;
* ``ensemble``: the average of the four.

Training runs with the BLAS libraries on one thread (numpy's thread pools on a small shared machine cost
more than they give to a network this size).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from ml_processing.sdk import FIELDS, MlpError, get_logger
from ml_processing.sdk.model import CLASSIFICATION, Described
from ml_processing.sdk.services.features import Features
from ml_processing.sdk.synthetic import SEED, market

from .catalog import Catalog
from .kinds import describe_booster, river_artifact
from .onnx_kind import OnnxKind

log = get_logger(__name__)

BARS = 6_000
MOMENTUM = 0.25  # of the returns: enough for the default models to beat a coin on the holdout
PIPELINE = "default"
NAMES = ("xgboost_default", "sklearn_default", "river_default", "neural_net")

Trained = tuple[str, str, bytes, Described, dict[str, float]]  # kind, format, artifact, described, metrics


async def register_defaults(catalog: Catalog, features: Features, run_in_thread: Callable[..., Awaitable[Any]]) -> None:
    """Train and register the default models; a failure is logged (the service starts without them)."""
    try:
        await _register(catalog, features, run_in_thread)
    except MlpError as exc:
        log.error("default_models_not_trained", error=exc.message)


async def _register(catalog: Catalog, features: Features, run_in_thread: Callable[..., Awaitable[Any]]) -> None:
    bars = market(BARS, momentum=MOMENTUM)
    columns = {name: bars[name] for name in FIELDS}
    listed = await features.pipelines(PIPELINE)
    fitted = [v for v in listed["pipelines"][0]["versions"] if v["fitted"]]
    pipeline = f"{fitted[-1]['name']}@{fitted[-1]['version']}" if fitted else \
        (await features.fit(PIPELINE, columns))["pipeline"]
    rows = await features.transform(pipeline, columns)
    x = np.asarray(rows["values"], dtype=np.float64)
    index = np.asarray(rows["index"])
    keep = index < len(bars["close"]) - 1
    x, index = x[keep], index[keep]
    y = (bars["close"][index + 1] > bars["close"][index]).astype(np.int64)
    split = int(len(x) * 0.8)
    trained = await run_in_thread(_train, x[:split], y[:split], x[split:], y[split:], list(rows["features"]))
    binding = {"pipeline": pipeline, "features": list(rows["features"])}
    for name, (kind, fmt, data, described, metrics) in zip(NAMES, trained, strict=True):
        await catalog.add(name, catalog.kinds[kind], fmt, data, described, {**binding, "metrics": metrics}, True,
                          {"trained_on": "synthetic"})
    ensemble = catalog.kinds["ensemble"]
    members = ('{"members": [' + ", ".join(f'"{n}"' for n in NAMES) + "]}").encode()
    described = await run_in_thread(ensemble.check, members, "json")
    await catalog.add("ensemble", ensemble, "json", members, described, binding, True)
    log.info("default_models_registered", pipeline=pipeline, rows=len(x),
             accuracy={name: t[4]["accuracy"] for name, t in zip(NAMES, trained, strict=True)})


def _train(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, names: list[str]) -> list[Trained]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _train_all(x, y, x_test, y_test, names)


def _train_all(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
               names: list[str]) -> list[Trained]:
    import skops.io as sio
    import xgboost as xgb
    from river import linear_model
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, log_loss

    from .kinds import SklearnKind

    def scores(proba: np.ndarray) -> dict[str, float]:
        return {"accuracy": round(float(accuracy_score(y_test, proba.argmax(axis=1))), 4),
                "log_loss": round(float(log_loss(y_test, proba, labels=[0, 1])), 4), "test_rows": len(y_test)}

    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.1, "nthread": 1, "seed": SEED,
                         "tree_method": "hist"}, xgb.DMatrix(x, label=y), num_boost_round=100)
    p = booster.predict(xgb.DMatrix(x_test))

    forest = RandomForestClassifier(n_estimators=60, max_depth=6, random_state=SEED, n_jobs=1).fit(x, y)

    online = linear_model.LogisticRegression()
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        online.learn_one(dict(zip(names, row, strict=True)), label)
    online_proba = np.array([[1 - (q := online.predict_proba_one(dict(zip(names, row, strict=True))).get(1, 0.5)), q]
                             for row in x_test.tolist()])

    return [("xgboost", "ubj", bytes(booster.save_raw(raw_format="ubj")), describe_booster(booster),
             scores(np.column_stack([1 - p, p]))),
            ("sklearn", "skops", sio.dumps(forest), SklearnKind().describe_estimator(forest),
             scores(forest.predict_proba(x_test))),
            ("river", "river", river_artifact(online),
             Described(CLASSIFICATION, x.shape[1], [0, 1], {"model": "river.linear_model.LogisticRegression"}),
             scores(online_proba)),
            _network(x, y, x_test, scores)]


def _network(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, scores: Callable[[np.ndarray], dict[str, float]]
             ) -> Trained:
    """The MLP, trained by scikit-learn and served as ONNX (described by the ``onnx`` kind's own checks)."""
    import warnings

    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    network = MLPClassifier(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=60, alpha=1e-3, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 60 iterations on purpose: small and quick
        network.fit(x, y)
    graph = to_onnx(network, initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
                    options={id(network): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    data = bytes(graph.SerializeToString())
    return "onnx", "onnx", data, OnnxKind().check(data, "onnx"), scores(network.predict_proba(x_test))
