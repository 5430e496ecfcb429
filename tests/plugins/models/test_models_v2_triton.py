"""The Open Inference Protocol (KServe V2) endpoints, driven by the official Triton HTTP client in JSON and
binary modes, against a real kernel; the answers equal the service's own predict op."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_processing.core.kernel import Kernel
from tests.support.model_service import forest_artifact
from tests.support.model_service import models_config as config
from tests.support.models import X, xgb_artifact

httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Kernel]:
    kernel = Kernel(config(tmp_path))
    await kernel.start()
    try:
        await kernel.request("models", "register", {"model_id": "trend", "kind": "xgboost", "format": "ubj",
                                                     "artifact": xgb_artifact(trees=40)})
        await kernel.request("models", "register", {"model_id": "forest", "kind": "sklearn", "artifact":
                                                     forest_artifact()})
        yield kernel
    finally:
        await kernel.stop()


def triton_session(url: str, rows: np.ndarray) -> dict[str, Any]:
    """Everything a Triton/KServe client does, synchronously (run in a thread beside the service's loop)."""
    client = httpclient.InferenceServerClient(url=url, concurrency=1)
    try:
        out: dict[str, Any] = {"live": client.is_server_live(), "ready": client.is_server_ready(),
                               "model_ready": client.is_model_ready("trend"),
                               "missing_ready": client.is_model_ready("nope"),
                               "metadata": client.get_model_metadata("trend"),
                               "version_metadata": client.get_model_metadata("trend", model_version="1")}
        for binary in (False, True):
            tensor = httpclient.InferInput("input-0", list(rows.shape), "FP32")
            tensor.set_data_from_numpy(rows.astype(np.float32), binary_data=binary)
            wanted = [httpclient.InferRequestedOutput("predict", binary_data=binary),
                      httpclient.InferRequestedOutput("predict_proba", binary_data=binary)]
            for model in ("trend", "forest"):
                result = client.infer(model, [tensor], outputs=wanted, request_id=f"r-{binary}")
                out[f"{model}-{binary}"] = (result.as_numpy("predict"), result.as_numpy("predict_proba"),
                                            result.get_response())
        default = httpclient.InferInput("input-0", list(rows.shape), "FP64")
        default.set_data_from_numpy(rows)  # binary by default, outputs unspecified: binary too
        result = client.infer("trend", [default], model_version="1")
        out["defaults"] = (result.as_numpy("predict"), result.as_numpy("predict_proba"))
        bad = httpclient.InferInput("input-0", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
        try:
            client.infer("trend", [bad])
        except httpclient.InferenceServerException as exc:  # the protocol's error, naming the problem
            out["error"] = str(exc)
        return out
    finally:
        client.close()


async def test_tritonclient_drives_the_v2_endpoints_in_json_and_binary_modes(served: Kernel) -> None:
    import asyncio

    rows = X[:5]
    url = served.edge_url.removeprefix("http://")
    out = await asyncio.to_thread(triton_session, url, rows)
    assert out["live"] and out["ready"] and out["model_ready"] and not out["missing_ready"]
    assert out["metadata"]["name"] == "trend" and out["metadata"]["inputs"][0]["shape"] == [-1, 6]
    assert {o["name"] for o in out["metadata"]["outputs"]} == {"predict", "predict_proba"}
    assert out["version_metadata"]["versions"] == ["1"]
    for model in ("trend", "forest"):
        own = await served.request("models", "predict_batch", {"model": model, "rows": rows.astype(np.float32)
                                                               .astype(np.float64)})
        for binary in (False, True):
            labels, proba, response = out[f"{model}-{binary}"]
            np.testing.assert_array_equal(labels, own["predictions"])
            np.testing.assert_allclose(proba, own["probabilities"], atol=1e-6)
            assert response["model_name"] == model and response["id"] == f"r-{binary}"
    labels, proba = out["defaults"]
    assert labels.shape == (5,) and proba.shape == (5, 2)
    assert "[rows, 6]" in out["error"]
