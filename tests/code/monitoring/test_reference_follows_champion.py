"""A retrained champion's drift reference holds the feedback rows it learned from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from logged_predictions import insert_predictions

from loopml.config import Settings
from loopml.control.live import labeled_feedback
from loopml.control.promotion import promote
from loopml.control.retrain import retrain
from loopml.data import Dataset, content_version
from loopml.monitoring import run_monitor
from loopml.monitoring.monitor import mix_feedback
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.store import open_store


def _frame(original: int, feedback: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"o{i}" for i in range(original)] + [f"f{i}" for i in range(feedback)],
            "domain": ["other"] * original + ["feedback"] * feedback,
        }
    )


def test_feedback_rows_get_their_share_of_the_reference() -> None:
    texts = mix_feedback(_frame(20_000, 1_000), None, share=0.75, cap=5000, seed=0)
    # 1,000 feedback rows at 75%: 333 original rows beside them, not 4,000.
    assert sum(t.startswith("f") for t in texts) == 1000
    assert sum(t.startswith("o") for t in texts) == 333
    many = mix_feedback(_frame(20_000, 9_000), None, share=0.75, cap=5000, seed=0)
    assert (sum(t.startswith("f") for t in many), len(many)) == (3750, 5000)


def test_feedback_of_the_test_split_joins_and_no_feedback_changes_nothing() -> None:
    validation = _frame(300, 0)
    texts = mix_feedback(validation, _frame(50, 100), share=0.5, cap=5000, seed=0)
    assert sum(t.startswith("f") for t in texts) == 100
    assert sum(t.startswith("o") for t in texts) == 100
    assert len(mix_feedback(_frame(300, 0), None, share=0.75, cap=5000, seed=0)) == 300
    assert len(mix_feedback(_frame(300, 40), None, share=0.0, cap=5000, seed=0)) == 340


@pytest.mark.slow
def test_drift_of_airline_traffic_falls_once_the_champion_learned_it(
    settings: Settings, tweets: Dataset
) -> None:
    s = settings.model_copy(update={"monitor_min_samples": 200, "gate_min_slice_f1": 0.2})
    frame = tweets.frame
    others = frame[frame["domain"] != "airline"].sample(3000, random_state=0).sort_index()
    airline = frame[frame["domain"] == "airline"].sample(2200, random_state=0)
    learned, window = airline.iloc[:1600], airline.iloc[1600:]
    store, registry = open_store(s.db_url), Registry(s)
    v1 = train(s, dataset=Dataset("non-airline", others, content_version(others))).version
    promote(store, registry, v1, force=True, reason="test")

    # The old champion served airline tweets and their labels came back; then a new window.
    old = registry.load(v1)
    start = datetime.now(UTC) - timedelta(hours=2)
    insert_predictions(s, v1, old, learned["text"].tolist(), learned["label"].tolist(), start=start)
    texts = window["text"].tolist()
    insert_predictions(s, v1, old, texts, None, start=start + timedelta(hours=1))
    before = run_monitor(s, window=len(window)).summary.drift_scores

    v2 = retrain(s, registry, labeled_feedback(store, registry.name), trigger="drift").version
    promote(store, registry, v2, force=True, reason="test: learned the airline feedback")
    insert_predictions(s, v2, registry.load(v2), texts, None, start=start + timedelta(hours=1))
    after = run_monitor(s, window=len(window)).summary.drift_scores
    print({k: (round(before[k], 3), round(after[k], 3)) for k in before})
    # The same airline window, against the old and the new champion's reference.
    assert after["text"] < before["text"] - 0.1
    for kind in ("mentions", "oov", "confidence"):
        assert after[kind] < before[kind], kind
    store.dispose()
