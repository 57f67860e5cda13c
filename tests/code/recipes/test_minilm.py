"""minilm-logreg: ONNX parity with sentence-transformers, pickling, the embedding cache, drift."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from minilm_support import minilm_home, onnx_cache, tweet_sample

from loopml.config import load_settings
from loopml.data import Dataset
from loopml.errors import TrainingError
from loopml.recipes import get_recipe

pytest.importorskip("torch", reason="needs the transformers extra")

__all__ = ["minilm_home", "onnx_cache"]  # fixtures, imported for pytest

pytestmark = pytest.mark.slow


def _encoder(quantize: bool = False) -> object:
    from loopml.recipes.minilm import base_encoder

    return base_encoder(quantize=quantize)


def test_onnx_embeddings_match_sentence_transformers(minilm_home: Path, tweets: Dataset) -> None:
    from sentence_transformers import SentenceTransformer

    from loopml.recipes.onnx_encoder import base_model_dir

    texts, _ = tweet_sample(tweets, 20, seed=5)
    reference = SentenceTransformer(str(base_model_dir()), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    fp32 = _encoder().encode(texts)  # type: ignore[attr-defined]
    int8 = _encoder(quantize=True).encode(texts)  # type: ignore[attr-defined]
    assert fp32.shape == (20, 384)
    cos32 = (fp32 * reference).sum(axis=1)
    cos8 = (int8 * reference).sum(axis=1)
    print(f"cosine to sentence-transformers: fp32 min {cos32.min():.6f}, int8 min {cos8.min():.4f}")
    assert cos32.min() > 0.999
    assert cos8.min() > 0.9
    assert np.allclose(np.linalg.norm(fp32, axis=1), 1.0, atol=1e-4)


def test_length_buckets_keep_the_order(minilm_home: Path) -> None:
    encoder = _encoder()
    texts = ["ok", "a much longer tweet about a delayed flight and lost bags " * 3, "fine", ""]
    together = encoder.encode(texts)  # type: ignore[attr-defined]
    alone = np.vstack([encoder.encode([t]) for t in texts])  # type: ignore[attr-defined]
    assert np.allclose(together, alone, atol=1e-5)


def test_fit_pickles_and_int8_accuracy_change(minilm_home: Path, tweets: Dataset) -> None:
    texts, labels = tweet_sample(tweets, 500, seed=1)
    train_x, train_y, test_x, test_y = texts[:400], labels[:400], texts[400:], labels[400:]
    fp32 = get_recipe("minilm-logreg").fit(train_x, train_y)
    int8 = get_recipe("minilm-logreg", {"quantize": "true"}).fit(train_x, train_y)

    restored = pickle.loads(pickle.dumps(fp32))
    assert restored.encoder._session is None, "the session is rebuilt lazily, not pickled"
    assert restored.classes == ["negative", "neutral", "positive"]
    proba = restored.predict_proba(test_x)
    assert proba.shape == (100, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.allclose(proba, fp32.predict_proba(test_x), atol=1e-6)

    acc32 = float(np.mean(np.array(fp32.predict(test_x)) == np.array(test_y)))
    acc8 = float(np.mean(np.array(int8.predict(test_x)) == np.array(test_y)))
    agree = float(np.mean(np.array(fp32.predict(test_x)) == np.array(int8.predict(test_x))))
    print(
        f"accuracy on 100 held-out tweets: fp32 {acc32:.3f}, int8 {acc8:.3f} ({acc8 - acc32:+.3f})"
    )
    assert acc32 > 0.5
    assert agree >= 0.85 and abs(acc8 - acc32) <= 0.08
    assert len(pickle.dumps(int8)) < len(pickle.dumps(fp32)) / 2


def test_retraining_encodes_only_new_texts(minilm_home: Path, tweets: Dataset) -> None:
    texts, labels = tweet_sample(tweets, 240, seed=2)
    first = get_recipe("minilm-logreg")
    first.fit(texts[:200], labels[:200])
    assert first.encoded == 200  # type: ignore[attr-defined]
    second = get_recipe("minilm-logreg")
    model = second.fit(texts, labels)
    assert second.encoded == 40  # type: ignore[attr-defined]
    cached = list((minilm_home / "cache" / "embeddings").rglob("*.npy"))
    assert len(cached) == 240
    # the cached vectors are the encoder's own
    assert np.allclose(model.embed(texts[:3]), model.encoder.encode(texts[:3]), atol=1e-6)


def test_bad_params_fail_before_any_work() -> None:
    with pytest.raises(TrainingError, match="recipe minilm-logreg: parameter max_length='2'"):
        get_recipe("minilm-logreg", {"max_length": "2"})
    with pytest.raises(TrainingError, match="unknown parameter 'ngram_max'"):
        get_recipe("minilm-logreg", {"ngram_max": "2"})


def test_oov_drift_is_not_applicable(minilm_home: Path, tweets: Dataset) -> None:
    from loopml.monitoring.drift import Thresholds, build_reference, detect_drift, observe

    texts, labels = tweet_sample(tweets, 200, seed=3)
    model = get_recipe("minilm-logreg").fit(texts[:150], labels[:150])
    reference = build_reference(texts[:150], texts[150:], model, cap=500, seed=0)
    assert reference.vocabulary is None
    thresholds = replace(Thresholds.from_settings(load_settings()), min_samples=10)
    checks = {
        c.kind: c
        for c in detect_drift(reference, observe(model, texts[150:]), thresholds, cap=500, seed=0)
    }
    assert checks["oov"].status == "unavailable"
    assert checks["oov"].note is not None and checks["oov"].note.startswith("not applicable")
    assert checks["text"].status == "ok"
    assert checks["embedding"].status in ("ok", "drift")  # measured for an encoder model
    assert reference.embeddings is not None and reference.embeddings.shape == (150, 384)


WINDOWS = 20


def test_embedding_drift_rates_on_real_tweets(minilm_home: Path, tweets: Dataset) -> None:
    """The embedding check of the monitor, on the real corpus with the threshold the settings
    ship: windows of 500 held-out tweets of the training domains rarely alarm (<= 5%), windows
    of 500 airline tweets alarm (>= 95%), and ``detect_drift`` reports it."""
    from loopml.monitoring.drift import (
        Thresholds,
        build_reference,
        detect_drift,
        embedding_drift_auc,
        observe,
    )

    frame = tweets.frame
    home = frame[frame["domain"] != "airline"].sample(3000, random_state=0)
    airline = frame[frame["domain"] == "airline"].sample(1000, random_state=0)
    model = get_recipe("minilm-logreg").fit(
        home["text"][:300].tolist(), home["label"][:300].tolist()
    )
    settings = load_settings()
    reference = build_reference(
        home["text"][:1000].tolist(),
        home["text"][1000:1100].tolist(),
        model,
        cap=settings.monitor_sample_cap,
        seed=0,
        embedding_cap=settings.monitor_embedding_cap,
    )
    held_out = model.embed(home["text"][1100:].tolist())
    shifted = model.embed(airline["text"].tolist())
    threshold = settings.monitor_embedding_auc_threshold
    rng = np.random.default_rng(7)

    def rate(pool: np.ndarray) -> tuple[float, float]:
        scores = [
            embedding_drift_auc(
                reference.embeddings, pool[rng.choice(len(pool), 500, replace=False)]
            )
            for _ in range(WINDOWS)
        ]
        return float(np.mean(np.asarray(scores) >= threshold)), float(np.mean(scores))

    false_alarm, null_auc = rate(held_out)
    detection, shift_auc = rate(shifted)
    print(
        f"embedding drift: false alarms {false_alarm:.2f} (mean AUC {null_auc:.3f}), "
        f"detection {detection:.2f} (mean AUC {shift_auc:.3f}), threshold {threshold}"
    )
    assert false_alarm <= 0.05
    assert detection >= 0.95

    thresholds = Thresholds.from_settings(settings)
    window = observe(model, airline["text"][:500].tolist())
    checks = {c.kind: c for c in detect_drift(reference, window, thresholds, cap=5000, seed=0)}
    assert checks["embedding"].status == "drift"
    assert checks["embedding"].score is not None and checks["embedding"].score >= threshold


def test_onnx_threads_follow_setting_and_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from loopml.config import get_settings
    from loopml.recipes.onnx_encoder import ort_threads

    monkeypatch.setenv("LOOPML_SERVE_WORKERS", str(os.cpu_count() or 1))
    assert ort_threads() == 1
    monkeypatch.setenv("LOOPML_ONNX_THREADS", "3")
    get_settings.cache_clear()
    assert ort_threads() == 3
