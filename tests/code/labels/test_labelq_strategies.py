"""The queue's order on real tweets: uncertainty picks the smallest margins, the diverse default
spreads over clusters when a burst of near-duplicates is the most uncertain, a drifted window
goes first, and only unlabelled predictions that still have text are offered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from labelq_support import give_labels, log_predictions

from loopml.config import Settings
from loopml.data import Dataset
from loopml.labels.queue import take
from loopml.labels.strategies import margin
from loopml.recipes import get_recipe
from loopml.store import MonitorResult, Prediction, open_store


@pytest.fixture(scope="module")
def scored(small_tweets: Dataset) -> tuple[list[str], list[dict[str, float]]]:
    """400 real tweets scored by a real model trained on 2,000 others."""
    frame = small_tweets.frame
    model = get_recipe("tfidf-logreg").fit(
        frame["text"].iloc[:2000].tolist(), frame["label"].iloc[:2000].tolist()
    )
    texts = frame["text"].iloc[2000:2400].tolist()
    proba = model.predict_proba(texts)
    probs = [{c: float(p) for c, p in zip(model.classes, row, strict=True)} for row in proba]
    return texts, probs


def test_uncertainty_takes_the_smallest_margins(
    settings: Settings, scored: tuple[list[str], list[dict[str, float]]]
) -> None:
    texts, probs = scored
    log_predictions(settings, texts, probs)
    items = take(settings, model_name=settings.model_name, limit=25, strategy="uncertainty",
                 holder="ann")  # fmt: skip
    margins = sorted(margin(p) for p in probs)
    assert len(items) == 25
    assert [round(1 - i.priority, 9) for i in items] == [round(m, 9) for m in margins[:25]]
    assert max(margin(i.probabilities) for i in items) <= margins[24] + 1e-12
    # random ignores the margins: its picks are far from the 25 smallest
    rest = take(settings, model_name=settings.model_name, limit=25, strategy="random",
                holder="bob")  # fmt: skip
    assert sum(margin(i.probabilities) <= margins[60] for i in rest) < 20


def test_diverse_spreads_over_clusters_past_a_burst(
    settings: Settings, scored: tuple[list[str], list[dict[str, float]]]
) -> None:
    texts, probs = scored
    # a burst of 80 near-duplicates, every one more uncertain than any real tweet
    burst = [f"@united flight 1234 delayed again, agent says {i % 4} more hours" for i in range(80)]
    flat = [{"negative": 0.33334, "neutral": 0.33333, "positive": 0.33333}] * len(burst)
    log_predictions(settings, texts, probs)
    log_predictions(settings, burst, flat, prefix="burst")
    greedy = take(settings, model_name=settings.model_name, limit=20, strategy="uncertainty",
                  holder="u")  # fmt: skip
    assert all(i.request_id.startswith("burst") for i in greedy)  # the burst takes it all
    from loopml.labels import queue

    queue.release(settings, [i.request_id for i in greedy], "u")
    diverse = take(settings, model_name=settings.model_name, limit=20, strategy="diverse",
                   holder="d")  # fmt: skip
    assert len(diverse) == 20
    assert sum(i.request_id.startswith("burst") for i in diverse) <= 2
    # what it takes besides the burst is still uncertain: below the median margin
    median = sorted(margin(p) for p in probs)[len(probs) // 2]
    real = [i for i in diverse if not i.request_id.startswith("burst")]
    assert sum(margin(i.probabilities) < median for i in real) >= 0.8 * len(real)


def test_a_drifted_window_goes_first(
    settings: Settings, scored: tuple[list[str], list[dict[str, float]]]
) -> None:
    texts, probs = scored
    start = datetime.now(UTC) - timedelta(hours=2)
    log_predictions(settings, texts[:200], probs[:200], start=start)
    drifted_at = start + timedelta(hours=1)
    log_predictions(settings, texts[200:], probs[200:], start=drifted_at, prefix="late")
    summary = {"drift_detected": True, "window": {"first_ts": drifted_at.isoformat()}}
    with open_store(settings.db_url) as store, store.session() as session:
        session.add(MonitorResult(ts=datetime.now(UTC), model_name=settings.model_name,
                                  model_version="1", window_size=200, verdict="drift",
                                  summary=summary, report_path=None))  # fmt: skip
    for strategy in ("diverse", "uncertainty", "entropy"):
        items = take(settings, model_name=settings.model_name, limit=30, strategy=strategy,
                     holder=strategy)  # fmt: skip
        assert all(i.request_id.startswith("late") for i in items), strategy


def test_only_unlabelled_predictions_with_text(
    settings: Settings, scored: tuple[list[str], list[dict[str, float]]]
) -> None:
    texts, probs = scored
    ids = log_predictions(settings, texts[:40], probs[:40])
    log_predictions(settings, texts[:10], probs[:10], model_name="other", prefix="o")
    give_labels(settings, ids[:15])
    with open_store(settings.db_url) as store, store.session() as session:
        for rid in ids[15:20]:
            row = session.get(Prediction, rid)
            assert row is not None
            row.text = None  # LOOPML_LOG_TEXT=false: nothing to show an annotator
    items = take(settings, model_name=settings.model_name, limit=100, holder="ann")
    assert sorted(i.request_id for i in items) == sorted(ids[20:])
