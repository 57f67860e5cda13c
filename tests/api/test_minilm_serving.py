"""`loopml train --recipe minilm-logreg` registers a model that `loopml serve` answers with,
`loopml monitor` checks in embedding space, and the controller's retrain trains again with the
same recipe (reusing the cached embeddings)."""

from __future__ import annotations

import json
import os
import pickle
from importlib.metadata import version as package_version
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from minilm_support import minilm_home, onnx_cache, tweet_sample
from serving_helpers import Server
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings, load_settings
from loopml.data import Dataset

pytest.importorskip("torch", reason="needs the transformers extra")

__all__ = ["minilm_home", "onnx_cache"]  # fixtures, imported for pytest


@pytest.mark.slow
def test_trained_minilm_model_is_served(
    minilm_home: Path, tweets: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts, labels = tweet_sample(tweets, 400, seed=7)
    data = tmp_path / "tweets.jsonl"
    rows = [json.dumps({"text": t, "label": y}) for t, y in zip(texts, labels, strict=True)]
    data.write_text("\n".join(rows) + "\n")
    # 400 tweets leave a handful per domain in the test split: the floors are not the point here.
    monkeypatch.setenv("LOOPML_GATE_MIN_MACRO_F1", "0.3")
    monkeypatch.setenv("LOOPML_GATE_MIN_SLICE_F1", "0")
    monkeypatch.setenv("LOOPML_GATE_SLICE_TOLERANCE", "1")  # no slice bar from the baseline
    # an unmasked MiniLM on 400 tweets flips some identity swaps (13 of 60 here): not the point
    monkeypatch.setenv("LOOPML_GATE_MAX_IDENTITY_FLIPS", "60")
    monkeypatch.setenv("LOOPML_GATE_MAX_P99_LATENCY_MS", "5000")
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(data), "--recipe", "minilm-logreg", "--promote", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["promoted"] and summary["metrics"]["macro_f1"] > 0.3

    settings = load_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOOPML_", "PROMETHEUS_"))}
    env |= {
        "LOOPML_HOME": str(minilm_home),
        "LOOPML_TRACKING_URI": settings.mlflow_uri,
        "LOOPML_CONFIG": str(minilm_home / "absent.toml"),
        "LOOPML_ONNX_THREADS": "1",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    server = Server(minilm_home, env).start(timeout=180)
    try:
        answer = httpx.post(
            server.url + "/v1/predict", json={"texts": texts[:5]}, timeout=60
        ).raise_for_status()
        body = answer.json()
        single = httpx.post(server.url + "/v1/predict", json={"text": texts[0]}, timeout=60).json()
        window = httpx.post(
            server.url + "/v1/predict", json={"texts": texts[-60:]}, timeout=60
        ).raise_for_status()
    finally:
        server.stop()
    assert body["model_version"] == summary["version"]
    assert [p["label"] for p in body["predictions"]] != []
    assert set(body["predictions"][0]["probabilities"]) == {"negative", "neutral", "positive"}
    # the server's answers are the registered model's
    from loopml.registry import Registry

    model = Registry(settings).load(summary["version"])
    expected = model.predict_proba(texts[:5])
    served = np.array([[p["probabilities"][c] for c in model.classes] for p in body["predictions"]])
    assert np.allclose(served, expected, atol=1e-4)
    assert single["predictions"][0]["label"] == body["predictions"][0]["label"]
    assert len(pickle.dumps(model)) > 10_000_000, "the ONNX encoder travels inside the model"
    _logged_requirements_are_the_serving_stack(settings, summary["version"], tmp_path)

    _monitor_sees_embedding_drift_checks(monkeypatch, window.json())
    _retrain_keeps_the_recipe(settings, summary["version"], texts[:40], labels[:40])


def _logged_requirements_are_the_serving_stack(
    settings: Settings, version: str, tmp_path: Path
) -> None:
    model_dir = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{settings.model_name}/{version}",
        dst_path=str(tmp_path / "model"),
        tracking_uri=settings.mlflow_uri,
    )
    needs = (Path(model_dir) / "requirements.txt").read_text().split()
    assert f"onnxruntime=={package_version('onnxruntime')}" in needs, needs
    assert f"tokenizers=={package_version('tokenizers')}" in needs, needs
    assert not any(n.startswith(("torch", "transformers", "peft")) for n in needs), needs


def _monitor_sees_embedding_drift_checks(
    monkeypatch: pytest.MonkeyPatch, window: dict[str, object]
) -> None:
    monkeypatch.setenv("LOOPML_MONITOR_MIN_SAMPLES", "10")
    result = CliRunner().invoke(app, ["monitor", "--window", "100", "--json"])
    assert result.exit_code in (0, 1), result.output  # 1: an alarm, a verdict all the same
    report = json.loads(result.stdout)
    assert report["window"]["rows"] >= 60
    checks = {c["kind"]: c for c in report["checks"]}
    assert checks["embedding"]["status"] in ("ok", "drift")
    assert 0.0 <= checks["embedding"]["score"] <= 1.0
    assert checks["oov"]["status"] == "unavailable"


def _retrain_keeps_the_recipe(
    settings: object, champion: str, texts: list[str], labels: list[str]
) -> None:
    import pandas as pd

    from loopml.control.retrain import retrain
    from loopml.registry import Registry

    registry = Registry(settings)  # type: ignore[arg-type]
    feedback = pd.DataFrame({"text": [f"{t} (again)" for t in texts], "label": labels})
    result = retrain(settings, registry, feedback, trigger="drift")  # type: ignore[arg-type]
    assert registry.version(result.version).tags["loopml.recipe"] == "minilm-logreg"
    run = registry.client.get_run(result.run_id)
    assert run.data.tags["loopml.recipe_reason"] == f"reused from champion version {champion}"
    # only the 40 feedback texts were new to the encoder; the champion's came from the cache
    assert run.data.metrics["embeddings_encoded"] <= 40
    assert run.data.metrics["embeddings_cached"] >= 300
