"""minilm-lora: a short real fine-tune, its MLflow metrics, and the exported model's parity."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from minilm_support import tweet_sample

from loopml.data import Dataset
from loopml.recipes import get_recipe

pytest.importorskip("torch", reason="needs the transformers extra")
pytest.importorskip("peft", reason="needs the transformers extra")

pytestmark = pytest.mark.slow


def test_lora_fine_tune_learns_logs_and_exports(home: Path, tweets: Dataset) -> None:
    texts, labels = tweet_sample(tweets, 220, seed=4)
    params = {"max_steps": "24", "eval_every": "8", "batch_size": "16", "patience": "5"}
    mlflow.set_tracking_uri(f"sqlite:///{home}/mlflow.db")
    recipe = get_recipe("minilm-lora", params)
    with mlflow.start_run() as run:
        model = recipe.fit(texts[:200], labels[:200])

    history = recipe.history  # type: ignore[attr-defined]
    assert [h["step"] for h in history] == [8, 16, 24]
    assert history[-1]["loss"] < history[0]["loss"], history
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in losses] == list(range(1, 25))
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_macro_f1")] == [
        8,
        16,
        24,
    ]

    held_out = texts[200:]
    onnx_proba = model.predict_proba(held_out)
    torch_proba = recipe.torch_proba(held_out)  # type: ignore[attr-defined]
    assert onnx_proba.shape == (20, 3)
    assert np.abs(onnx_proba - torch_proba).max() < 1e-3
    assert "torch" not in type(model.head).__module__


def test_lora_is_deterministic_and_stops_early(home: Path, tweets: Dataset) -> None:
    texts, labels = tweet_sample(tweets, 90, seed=6)
    # learning rates too small to change a prediction: the validation F1 cannot improve
    frozen = {"learning_rate": "1e-9", "head_learning_rate": "1e-9"}
    params = {"max_steps": "12", "eval_every": "2", "patience": "1", "batch_size": "8"} | frozen
    runs = [get_recipe("minilm-lora", params) for _ in range(2)]
    probas = [r.fit(texts[:80], labels[:80]).predict_proba(texts[80:]) for r in runs]
    assert np.allclose(probas[0], probas[1], atol=1e-5)
    steps = [h["step"] for h in runs[0].history]  # type: ignore[attr-defined]
    assert steps == [h["step"] for h in runs[1].history]  # type: ignore[attr-defined]
    assert steps == [2, 4], "patience 1 stops at the first evaluation that does not improve"
