"""Units of the monitor's statistics: they agree with scikit-learn and Evidently."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from loopml.config import load_settings
from loopml.data import Dataset
from loopml.monitoring import Reference, assess
from loopml.monitoring.descriptors import oov_rates, surface_descriptors
from loopml.monitoring.drift import jensenshannon_distance, wasserstein_norm
from loopml.monitoring.metrics import families_from_summary
from loopml.monitoring.quality import live_quality, macro_f1, wilson_interval
from loopml.recipes import get_recipe


def test_macro_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = pd.Series(rng.choice(["a", "b", "c"], 300))
    pred = pd.Series(np.where(rng.random(300) < 0.7, truth, rng.choice(["a", "b", "d"], 300)))
    assert macro_f1(truth, pred) == pytest.approx(f1_score(truth, pred, average="macro"))


def test_wilson_interval_known_value() -> None:
    low, high = wilson_interval(81, 100)
    assert (round(low, 4), round(high, 4)) == (0.7222, 0.8749)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_quality_alarm_needs_enough_labels_and_a_whole_interval_under_the_floor() -> None:
    truth = pd.Series(["a", "b"] * 100)
    wrong = pd.Series(["b", "a"] * 100)
    assert live_quality(truth, wrong, floor=0.6, min_labeled=100, seed=0).status == "alarm"
    assert (
        live_quality(truth[:50], wrong[:50], floor=0.6, min_labeled=100, seed=0).status
        == "insufficient_data"
    )
    good = live_quality(truth, truth, floor=0.6, min_labeled=100, seed=0)
    assert good.status == "ok" and good.macro_f1 == 1.0
    none = live_quality(pd.Series([None] * 5), truth[:5], floor=0.6, min_labeled=1, seed=0)
    assert none.labeled == 0 and none.macro_f1 is None


def test_bootstrap_interval_covers_the_estimate() -> None:
    rng = np.random.default_rng(1)
    truth = pd.Series(rng.choice(["x", "y", "z"], 500))
    pred = pd.Series(np.where(rng.random(500) < 0.6, truth, "x"))
    q = live_quality(truth, pred, floor=0.1, min_labeled=10, seed=0)
    assert q.macro_f1_ci is not None and q.macro_f1 is not None
    assert q.macro_f1_ci[0] < q.macro_f1 < q.macro_f1_ci[1]
    assert q.macro_f1_ci[1] - q.macro_f1_ci[0] < 0.15


def test_distances_match_evidently() -> None:
    from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
    from evidently.legacy.calculations.stattests.wasserstein_distance_norm import (
        _wasserstein_distance_norm,
    )
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(2)
    ref, cur = pd.Series(rng.normal(0, 1, 400)), pd.Series(rng.normal(0.3, 1.2, 300))
    expected, _ = _wasserstein_distance_norm(ref, cur, ColumnType.Numerical, 0.1)
    assert wasserstein_norm(ref, cur) == pytest.approx(expected)
    labels_ref = pd.Series(rng.choice(["neg", "neu", "pos"], 400, p=[0.3, 0.5, 0.2]))
    labels_cur = pd.Series(rng.choice(["neg", "neu", "pos"], 300, p=[0.6, 0.3, 0.1]))
    expected, _ = _jensenshannon(labels_ref, labels_cur, ColumnType.Categorical, 0.1)
    assert jensenshannon_distance(labels_ref, labels_cur, ["neg", "neu", "pos"]) == pytest.approx(
        expected
    )


def test_surface_descriptors_and_oov() -> None:
    texts = pd.Series(["@united my flight http://t.co/x #fail", "café olé", "plain words"])
    d = surface_descriptors(texts)
    assert d["mentions"].tolist() == [1.0, 0.0, 0.0]
    assert d["urls"].tolist() == [1.0, 0.0, 0.0]
    assert d["hashtags"].tolist() == [1.0, 0.0, 0.0]
    assert d["non_ascii"].tolist() == [0.0, 1.0, 0.0]
    assert d["length"].tolist() == [float(len(t)) for t in texts]
    assert oov_rates(["plain words here", "!!"], frozenset({"plain", "words"})).tolist() == [
        pytest.approx(1 / 3),
        0.0,
    ]


def _reference() -> Reference:
    rng = np.random.default_rng(3)
    texts = [f"word{i % 50} other{i % 7}" for i in range(400)]
    inputs = pd.concat(
        [pd.DataFrame({"text": texts}), surface_descriptors(pd.Series(texts))], axis=1
    )
    outputs = pd.DataFrame(
        {
            "text": texts,
            "label": rng.choice(["a", "b"], 400),
            "confidence": rng.uniform(0.5, 1, 400),
            "oov": 0.0,
        }
    )
    return Reference(inputs, outputs, ["a", "b"], frozenset(f"word{i}" for i in range(50)))


def test_a_small_window_is_insufficient_data_never_drift() -> None:
    window = pd.DataFrame(
        {"text": ["zzz qqq"] * 20, "length": 7.0, "label": "a", "confidence": 0.5}
    )
    a = assess(_reference(), window, load_settings())
    assert a.verdict == "insufficient_data"
    assert not a.drift_detected and a.checks == []


def test_gauges_from_a_summary() -> None:
    summary = {
        "verdict": "drift",
        "drift_detected": True,
        "quality_alarm": False,
        "checks": [
            {"kind": "text", "score": 0.9, "threshold": 0.6},
            {"kind": "oov", "score": None, "threshold": 0.25},
        ],
        "quality": {
            "labeled": 0,
            "accuracy": None,
            "macro_f1": None,
            "macro_f1_ci": None,
            "floor": 0.6,
        },
        "window": {"rows": 500},
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families_from_summary(summary, ran_at=123.0, model="topic")
        for s in f.samples
    }
    m = ("model", "topic")
    assert samples[("loopml_drift_score", (("kind", "text"), m))] == 0.9
    assert ("loopml_drift_score", (("kind", "oov"), m)) not in samples
    assert samples[("loopml_drift_detected", (m,))] == 1.0
    assert samples[("loopml_monitor_verdict", (m, ("verdict", "drift")))] == 1.0
    assert samples[("loopml_monitor_verdict", (m, ("verdict", "ok")))] == 0.0
    assert samples[("loopml_monitor_last_run_timestamp_seconds", (m,))] == 123.0
    assert ("loopml_live_macro_f1", (m,)) not in samples


def test_embedding_drift_auc_is_evidentlys_embedding_drift() -> None:
    from evidently import DataDefinition, Report
    from evidently import Dataset as EvidentlyDataset
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod

    from loopml.monitoring.drift import embedding_drift_auc

    rng = np.random.default_rng(0)
    reference, current = rng.normal(size=(400, 16)), rng.normal(0.5, 1, size=(300, 16))
    columns = [f"e{i}" for i in range(16)]
    definition = DataDefinition(embeddings={"emb": columns})

    def frame(x: np.ndarray) -> EvidentlyDataset:
        return EvidentlyDataset.from_pandas(
            pd.DataFrame(x, columns=columns), data_definition=definition
        )

    method = ModelDriftMethod(threshold=0.6)
    report = Report([EmbeddingsDrift(embeddings_name="emb", drift_method=method)])
    expected = report.run(frame(current), frame(reference)).dict()["metrics"][0]["value"]
    assert embedding_drift_auc(reference, current) == pytest.approx(expected)
    assert embedding_drift_auc(reference, current) > 0.8
    assert abs(embedding_drift_auc(reference, rng.normal(size=(300, 16))) - 0.5) < 0.08


def test_embedding_drift_is_not_applicable_without_an_encoder(tweets: Dataset) -> None:
    from loopml.monitoring.drift import Thresholds, build_reference, detect_drift, observe

    texts, labels = _sample(tweets)
    model = get_recipe("tfidf-logreg").fit(texts[:300], labels[:300])
    reference = build_reference(texts[:300], texts[300:], model, cap=500, seed=0)
    assert reference.embeddings is None
    thresholds = replace(Thresholds.from_settings(load_settings()), min_samples=10)
    checks = {
        c.kind: c
        for c in detect_drift(reference, observe(model, texts[300:]), thresholds, cap=500, seed=0)
    }
    assert checks["embedding"].status == "unavailable"
    assert checks["embedding"].note.startswith("not applicable: the model's recipe has no")


def _sample(tweets: Dataset) -> tuple[list[str], list[str]]:
    frame = tweets.frame.sample(400, random_state=4)
    return frame["text"].tolist(), frame["label"].tolist()
