"""`loopml train --recipe minilm-logreg` registers a model that `loopml serve` answers with."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import httpx
import numpy as np
import pytest
from minilm_support import minilm_home, onnx_cache, tweet_sample
from serving_helpers import Server
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import load_settings
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
