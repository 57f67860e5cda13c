"""ML Test Score, Model 2: the offline proxy metric beside the live one. The monitor puts the
champion's test macro-F1 (from its training run) next to its live macro-F1 from feedback, on the
same classes, and raises an alarm when the gap passes LOOPML_MONITOR_MAX_OFFLINE_GAP."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
from logged_predictions import insert_predictions
from sklearn.metrics import f1_score

from loopml.config import Settings, load_settings
from loopml.control.promotion import promote
from loopml.data import Dataset, content_version
from loopml.monitoring import run_monitor
from loopml.monitoring.proxy import compare_offline_live, offline_class_f1
from loopml.pipeline.train import TrainResult, train
from loopml.recipes.base import TextClassifier
from loopml.registry import Registry
from loopml.store import open_store


def test_the_comparison_uses_the_classes_the_live_labels_hold() -> None:
    class_f1 = {"negative": 0.8, "neutral": 0.6, "positive": 0.7}
    truth = pd.Series(["negative"] * 6 + ["positive"] * 4 + [None] * 5)
    predicted = pd.Series(
        ["negative"] * 5 + ["neutral"] + ["positive"] * 2 + ["negative"] * 2 + ["neutral"] * 5
    )
    result = compare_offline_live(0.7, class_f1, truth, predicted, min_labeled=10, max_gap=0.1)
    # Live: negative P 5/7 R 5/6 -> F1 0.7692; positive P 1 R 0.5 -> 0.6667; mean 0.7179.
    # Offline on the same two classes: (0.8 + 0.7) / 2 = 0.75; neutral is left out of both.
    assert result.labels == ["negative", "positive"]
    assert result.offline_macro_f1_same_labels == pytest.approx(0.75)
    assert result.live_macro_f1_same_labels == pytest.approx(0.717949, abs=1e-6)
    assert result.gap == pytest.approx(0.032051, abs=1e-6)
    assert (result.labeled, result.status, result.reason()) == (10, "ok", None)
    tight = compare_offline_live(0.7, class_f1, truth, predicted, min_labeled=10, max_gap=0.03)
    assert tight.status == "alarm"
    assert "gap 0.032 > 0.03" in str(tight.reason())
    few = compare_offline_live(0.7, class_f1, truth, predicted, min_labeled=11, max_gap=0.1)
    assert (few.status, few.gap) == ("insufficient_data", None)


def test_offline_class_f1_keeps_classes_not_slices() -> None:
    metrics = {"macro_f1": 0.7, "f1_negative": 0.8, "f1_domain_airline": 0.6, "recall_negative": 1}
    assert offline_class_f1(metrics) == {"negative": 0.8}


class World(NamedTuple):
    home: Path
    result: TrainResult
    classifier: TextClassifier
    held_out: pd.DataFrame
    airline: pd.DataFrame


@pytest.fixture(scope="module")
def world(tweets: Dataset, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A champion trained on 4,000 non-airline tweets; held-out and airline tweets to serve."""
    home = tmp_path_factory.mktemp("offline-live")
    settings = load_settings(home=home).prepare()
    frame = tweets.frame
    others = frame[frame["domain"] != "airline"].sample(5000, random_state=1)
    rows, held_out = others.iloc[:4000], others.iloc[4000:]
    result = train(settings, dataset=Dataset("non-airline", rows, content_version(rows)))
    registry = Registry(settings)
    promote(open_store(settings.db_url), registry, result.version, force=True, reason="test")
    airline = frame[frame["domain"] == "airline"].sample(1000, random_state=1)
    return World(home, result, registry.load(result.version), held_out, airline)


def _monitor(world: World, rows: pd.DataFrame, db: str) -> tuple[dict, float]:
    settings: Settings = load_settings(home=world.home, database_url=f"sqlite:///{world.home / db}")
    texts, truth = rows["text"].tolist(), rows["label"].tolist()
    insert_predictions(settings, world.result.version, world.classifier, texts, truth)
    report = run_monitor(settings, window=len(rows))
    summary = report.to_dict()
    labels = sorted(set(truth))
    live = f1_score(truth, world.classifier.predict(texts), labels=labels, average="macro")
    assert report.alarm == (
        summary["offline_vs_live"]["status"] == "alarm" or summary["verdict"] != "ok"
    )
    return summary, float(live)


@pytest.mark.slow
def test_in_domain_traffic_keeps_offline_and_live_close(world: World) -> None:
    summary, live = _monitor(world, world.held_out, "in-domain.db")
    gap = summary["offline_vs_live"]
    metrics = world.result.evaluation.metrics
    assert gap["offline_macro_f1"] == pytest.approx(metrics["macro_f1"])
    assert gap["labels"] == ["negative", "neutral", "positive"]
    assert gap["offline_macro_f1_same_labels"] == pytest.approx(
        (metrics["f1_negative"] + metrics["f1_neutral"] + metrics["f1_positive"]) / 3, abs=1e-6
    )
    assert gap["live_macro_f1_same_labels"] == pytest.approx(live, abs=1e-6)
    assert gap["labeled"] == 1000
    assert abs(gap["gap"]) < 0.08 and gap["status"] == "ok"
    assert not any(r.startswith("offline/live gap") for r in summary["reasons"])


@pytest.mark.slow
def test_shifted_traffic_opens_a_gap_and_an_alarm(world: World) -> None:
    summary, live = _monitor(world, world.airline, "airline.db")
    gap = summary["offline_vs_live"]
    assert gap["live_macro_f1_same_labels"] == pytest.approx(live, abs=1e-6)
    assert gap["gap"] == pytest.approx(gap["offline_macro_f1_same_labels"] - live, abs=1e-5)
    assert gap["gap"] > 0.15 and gap["status"] == "alarm"
    reason = next(r for r in summary["reasons"] if r.startswith("offline/live gap"))
    assert f"live {live:.3f}" in reason and "> 0.15" in reason
