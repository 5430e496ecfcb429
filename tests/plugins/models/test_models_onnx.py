"""The ``onnx`` model kind on a real kernel: a scikit-learn MLP converted with skl2onnx answers what
scikit-learn answers (float32 tolerance), persisted and reloaded at restart; uploads that break the rules
(custom-domain operators, malformed files, wrong input shapes, outputs that are not probabilities, opsets
onnxruntime does not know, external data) are refused with a 400 naming what is wrong, and the service keeps
serving."""

from __future__ import annotations

import base64
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

from ml_processing.core.errors import BadRequest
from ml_processing.plugins.models.onnx_graph import supported_opsets
from ml_processing.plugins.models.onnx_kind import OnnxKind, network
from tests.support.kernels import running
from tests.support.model_service import models_config as config
from tests.support.models import X, Y, xgb_artifact
from tests.support.rest import call

pytestmark = [pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
              pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")]  # 1e300 as float32

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    MLP = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(X, Y)


def converted(estimator: Any, zipmap: bool = True, double: bool = False) -> bytes:
    kind = DoubleTensorType if double else FloatTensorType
    options = {id(estimator): {"zipmap": zipmap}} if hasattr(estimator, "predict_proba") else None
    return bytes(to_onnx(estimator, initial_types=[("input", kind([None, X.shape[1]]))],
                         options=options).SerializeToString())


def upload(artifact: bytes, **extra: Any) -> dict[str, Any]:
    return {"kind": "onnx", "format": "onnx", "artifact": base64.b64encode(artifact).decode(), **extra}


def graph(nodes: list[Any], inputs: list[Any], outputs: list[Any], initializer: list[Any] = (),
          opsets: dict[str, int] | None = None) -> bytes:
    """A model written with the onnx helper API (IR version 8, opset 17 unless `opsets` says otherwise)."""
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(initializer)),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in (opsets or {"": 17}).items()])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def tensor(name: str, shape: list[Any], elem: int = TensorProto.FLOAT) -> Any:
    return helper.make_tensor_value_info(name, elem, shape)


SOFTMAX = [helper.make_node("Softmax", ["logits"], ["p"], axis=1)]


def two_columns(input_shape: list[Any], elem: int = TensorProto.FLOAT) -> bytes:
    """x -> MatMul(w) -> Softmax: probabilities of two classes, for an input of `input_shape`."""
    width = input_shape[-1] if isinstance(input_shape[-1], int) else 6
    w = numpy_helper.from_array(np.ones((width, 2), dtype=np.float32), "w")
    return graph([helper.make_node("MatMul", ["x", "w"], ["logits"]), *SOFTMAX], [tensor("x", input_shape, elem)],
                 [tensor("p", ["N", 2])], [w])


def fused(domain: str) -> bytes:
    """A graph whose one operator, FusedMatMul, is of `domain` (onnxruntime implements com.microsoft's)."""
    w = numpy_helper.from_array(np.eye(6, 2, dtype=np.float32), "w")
    return graph([helper.make_node("FusedMatMul", ["x", "w"], ["logits"], domain=domain, alpha=1.0), *SOFTMAX],
                 [tensor("x", ["N", 6])], [tensor("p", ["N", 2])], [w], opsets={"": 17, domain: 1})


async def test_an_mlp_from_skl2onnx_answers_what_scikit_learn_answers_and_survives_a_restart(tmp_path: Path) -> None:
    rows = X[:200]
    async with running(config(tmp_path)) as kernel, aiohttp.ClientSession() as http:
        first = await call(http, kernel, "POST", "/api/v1/models/mlp/versions", upload(converted(MLP)))
        assert (first["kind"], first["task"], first["classes"], first["n_features"]) == ("onnx", "classification",
                                                                                          [0, 1], 6)
        assert first["paths"] == ["onnx"] and first["details"]["zipmap"]  # skl2onnx's ZipMap, cut off
        batch = await kernel.request("models", "predict_batch", {"model": "mlp", "rows": rows})
        np.testing.assert_allclose(batch["probabilities"], MLP.predict_proba(rows), atol=1e-5)
        assert list(batch["predictions"]) == MLP.predict(rows).tolist() and batch["path"] == "onnx"
        one = await call(http, kernel, "POST", "/api/v1/predict", {"model": "mlp", "features": X[3].tolist()})
        assert one["probabilities"] == pytest.approx(MLP.predict_proba(X[3:4])[0].tolist(), abs=1e-5)
        assert one["path"] == "onnx" and one["prediction"] == MLP.predict(X[3:4])[0]

        plain = await call(http, kernel, "POST", "/api/v1/models/mlp/versions",
                           upload(converted(MLP, zipmap=False, double=True), promote=True))
        assert plain["version"] == 2 and plain["details"]["dtype"] == "float64"
        exact = await kernel.request("models", "predict_batch", {"model": "mlp", "rows": rows})
        np.testing.assert_allclose(exact["probabilities"], MLP.predict_proba(rows), rtol=1e-9, atol=1e-12)

        words = MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0).fit(X, np.array(["down", "up"])[Y])
        named = await kernel.request("models", "register", {"model_id": "words", "kind": "onnx",
                                                             "artifact": converted(words)})
        assert named["classes"] == ["down", "up"]
        labels = await kernel.request("models", "predict_batch", {"model": "words", "rows": rows})
        assert list(labels["predictions"]) == words.predict(rows).tolist()

        level = MLPRegressor(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(X, X[:, 0] - X[:, 1])
        regressor = await kernel.request("models", "register", {"model_id": "level", "kind": "onnx",
                                                                 "artifact": converted(level)})
        assert regressor["task"] == "regression" and regressor["classes"] is None
        values = await kernel.request("models", "predict_batch", {"model": "level", "rows": rows})
        np.testing.assert_allclose(values["predictions"], level.predict(rows), rtol=1e-4, atol=1e-5)
        assert values["probabilities"] is None

        nan = await call(http, kernel, "POST", "/api/v1/predict", {"model": "mlp", "features": [0.0] * 5 + [None]},
                         status=400)
        assert nan["error"]["field"] == "features[5]"  # a network takes finite values only
        huge = await call(http, kernel, "POST", "/api/v1/predict/batch",
                          {"model": "mlp", "version": 1, "rows": [[0.0] * 6, [1e300] * 6]},
                          status=400)  # float64 values the float32 graph of version 1 cannot hold
        assert "row 1, feature 0: 1e+300 is beyond the range of float32" in huge["error"]["message"]
        await kernel.request("models", "register", {"model_id": "trees", "kind": "xgboost", "artifact": xgb_artifact()})
        mixed = await kernel.request("models", "register", {"model_id": "mixed", "kind": "ensemble",
                                                             "artifact": b'{"members": ["mlp", "trees"]}'})
        assert mixed["classes"] == [0, 1]
        both = await kernel.request("models", "predict", {"model": "mixed", "features": X[5].tolist()})
        assert both["path"] == "onnx" and abs(sum(both["probabilities"]) - 1) < 1e-6

    folder = kernel.config.data_path / "models" / "mlp" / "2"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "onnx" and manifest["artifact"] == "network.onnx"
    assert manifest["files"]["network.onnx"] == hashlib.sha256((folder / "network.onnx").read_bytes()).hexdigest()
    async with running(config(tmp_path)) as kernel:
        again = await kernel.request("models", "predict_batch", {"model": "mlp", "rows": rows})
        assert again["version"] == 2 and np.array_equal(again["probabilities"], exact["probabilities"])
        first_version = await kernel.request("models", "predict_batch", {"model": "mlp", "version": 1, "rows": rows})
        np.testing.assert_allclose(first_version["probabilities"], batch["probabilities"], atol=0)


def bad_uploads() -> list[tuple[str, bytes, str]]:
    """(what, artifact, a fragment of the refusal's message)."""
    good = converted(MLP, zipmap=False)
    model = onnx.load_model_from_string(network(6, 4, 2))
    outside = onnx.ModelProto()
    outside.CopyFrom(model)
    weight = outside.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="../../../../etc/passwd")
    w = numpy_helper.from_array(np.ones((6, 2), dtype=np.float32), "w")
    logits = graph([helper.make_node("MatMul", ["x", "w"], ["p"])], [tensor("x", ["N", 6])], [tensor("p", ["N", 2])],
                   [w])
    return [
        ("a custom-domain operator", graph([helper.make_node("MyOp", ["x"], ["p"], domain="com.acme")],
                                           [tensor("x", ["N", 6])], [tensor("p", ["N", 2])],
                                           opsets={"": 17, "com.acme": 1}), "com.acme:MyOp"),
        ("an operator onnxruntime implements, outside the standard domains", fused("com.microsoft"),
         "com.microsoft:FusedMatMul"),
        ("random bytes", np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes(), "not an ONNX model"),
        ("a truncated model", good[: len(good) // 2], "ONNX model"),
        ("JSON", b'{"members": ["a", "b"]}', "ONNX model"),
        ("a rank-3 input", two_columns(["N", 3, 6]), "[N, 3, 6]: it must be [N, n_features]"),
        ("a fixed batch", two_columns([1, 6]), "batch"),
        ("an unknown number of features", two_columns(["N", "F"]), "number of features"),
        ("an integer input", two_columns(["N", 6], TensorProto.INT64), "float or double tensor"),
        ("two inputs", graph([helper.make_node("Add", ["x", "y"], ["logits"]), *SOFTMAX],
                             [tensor("x", ["N", 2]), tensor("y", ["N", 2])], [tensor("p", ["N", 2])]),
         "2 inputs"),
        ("logits, not probabilities", logits, "Softmax"),
        ("an opset onnxruntime does not know", graph(SOFTMAX, [tensor("logits", ["N", 2])], [tensor("p", ["N", 2])],
                                                     opsets={"": supported_opsets()["ai.onnx"] + 1}), "opset ai.onnx"),
        ("external data", outside.SerializeToString(), "external data"),
    ]


async def test_uploads_that_break_the_rules_are_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    async with running(config(tmp_path)) as kernel, aiohttp.ClientSession() as http:
        for what, artifact, fragment in bad_uploads():
            out = await call(http, kernel, "POST", "/api/v1/models/bad/versions", upload(artifact), status=400)
            assert out["error"]["field"] == "artifact" and fragment in out["error"]["message"], (what, out)
        custom = await call(http, kernel, "POST", "/api/v1/models/bad/versions", upload(bad_uploads()[0][1]),
                            status=400)
        assert "onnx_custom_ops" in custom["error"]["message"]
        assert not (kernel.config.data_path / "models" / "bad").exists()  # nothing refused was written
        health = await call(http, kernel, "GET", "/health")
        models = health["actors"]["models"]
        assert (models["state"], models["restarts"], models["internal_errors"]) == ("running", 0, 0)


async def test_custom_operators_only_where_allowed_and_only_those_onnxruntime_implements(tmp_path: Path) -> None:
    async with running(config(tmp_path, onnx_custom_ops=True)) as kernel:
        accepted = await kernel.request("models", "register", {"model_id": "fused", "kind": "onnx",
                                                               "artifact": fused("com.microsoft")})
        assert accepted["details"]["custom_ops"] == ["com.microsoft:FusedMatMul"]
        out = await kernel.request("models", "predict", {"model": "fused", "features": [2.0, 1.0, 0, 0, 0, 0]})
        assert out["probabilities"] == pytest.approx(np.exp([2, 1]) / np.exp([2, 1]).sum(), abs=1e-6)
        with pytest.raises(BadRequest, match=r"does not implement: com\.acme:FusedMatMul") as err:
            await kernel.request("models", "register", {"model_id": "acme", "kind": "onnx",
                                                         "artifact": fused("com.acme")})
        assert err.value.field == "artifact"
    async with running(config(tmp_path)) as kernel:  # turned off: the stored version is refused, never run
        listed = await kernel.request("models", "get", {"model_id": "fused"})
        assert listed["status"] == "unavailable" and "onnx_custom_ops" in listed["refused"]["1"]


def test_the_kind_describes_its_own_example_network() -> None:
    described = OnnxKind().check(network(4, 8, 3), "onnx")
    assert (described.task, described.n_features, described.classes) == ("classification", 4, [0, 1, 2])
    assert described.details["opsets"] == {"ai.onnx": 17} and described.details["custom_ops"] == []
    with pytest.raises(BadRequest, match="metadata 'classes'"):
        model = onnx.load_model_from_string(network(4, 8, 3))
        helper.set_model_props(model, {"classes": json.dumps(["a", "b"])})  # three columns, two names
        OnnxKind().check(model.SerializeToString(), "onnx")
    model = onnx.load_model_from_string(network(4, 8, 3))
    helper.set_model_props(model, {"classes": json.dumps(["down", "flat", "up"])})
    assert OnnxKind().check(model.SerializeToString(), "onnx").classes == ["down", "flat", "up"]
