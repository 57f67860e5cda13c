"""Data 5 of the ML Test Score: a forgotten or expired feedback text is gone from every place
training reads: the loopml database and every training run's split files in MLflow, so the next
retrain does not learn it again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from logged_predictions import insert_predictions
from sqlalchemy import select

from loopml.config import Settings
from loopml.control.live import labeled_feedback
from loopml.control.retrain import retrain
from loopml.data import Dataset, load_splits
from loopml.data.privacy import FEEDBACK_DOMAIN, forget, purge
from loopml.data.scrub import REMOVED_TAG
from loopml.pipeline.gate import FEEDBACK_DOMAIN as GATE_FEEDBACK_DOMAIN
from loopml.pipeline.train import TrainResult, train
from loopml.registry import CHAMPION, Registry
from loopml.store import AuditEntry, Prediction, open_store

SECRET = "my neighbour's number is 555-0199, call him about the @united refund"
OLD = "kept past retention: @jetblue lost my bag on flight 77"
LABELS = ["negative", "neutral", "positive"]
WORDS = {"negative": "awful delay", "neutral": "flight at noon", "positive": "lovely crew"}


def _texts(prefix: str, n: int) -> tuple[list[str], list[str]]:
    truth = [LABELS[i % 3] for i in range(n)]
    return [f"{prefix} {i}: {WORDS[t]}" for i, t in enumerate(truth)], truth


def _artifact_texts(root: Path) -> tuple[set[str], str]:
    """Every text in every parquet file under ``root`` and the raw bytes of the other files
    (as text), i.e. everything a training run can read back from the artifact store."""
    texts: set[str] = set()
    raw = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            if "text" in frame:
                texts |= set(frame["text"].astype(str))
        else:
            raw.append(path.read_bytes().decode("utf-8", "replace"))
    return texts, "\n".join(raw)


def _retrained_champion(
    settings: Settings, data: Dataset, texts: list[str], truth: list[str]
) -> tuple[Registry, TrainResult]:
    """A champion, then feedback on ``texts`` logged as serving logs it, then a retrained
    champion that learned them (the retrain reads the champion's splits back from MLflow)."""
    registry = Registry(settings)
    first = train(settings, dataset=data, recipe="tfidf-logreg")
    registry.move_alias(CHAMPION, first.version)
    insert_predictions(settings, first.version, registry.load(first.version), texts, truth)
    with open_store(settings.db_url) as store:
        feedback = labeled_feedback(store, settings.model_name)
    second = retrain(settings, registry, feedback, trigger="test")
    registry.move_alias(CHAMPION, second.version)
    return registry, second


@pytest.mark.slow
def test_a_forgotten_text_leaves_the_splits_and_the_next_retrain(
    settings: Settings, small_tweets: Dataset
) -> None:
    texts, truth = _texts("feedback", 40)
    texts[7] = SECRET
    registry, second = _retrained_champion(settings, small_tweets, texts, truth)
    artifacts = settings.home_dir / "artifacts"
    assert SECRET in _artifact_texts(artifacts)[0], "the retrain copied the text into its splits"

    counts = forget(settings, texts=[SECRET], reason="subject request")
    in_parquet, raw = _artifact_texts(artifacts)
    assert SECRET not in in_parquet and SECRET not in raw
    assert (counts["predictions"], counts["feedback"]) == (1, 1)
    assert counts["split_runs"] == [second.run_id] and counts["split_rows"] == 1
    assert texts[8] in in_parquet, "only the forgotten text goes"
    parts = load_splits(registry.client, second.run_id, ["train", "validation", "test"])
    assert sum(len(p) for p in parts.values()) == sum(second.split_sizes.values()) - 1
    assert registry.client.get_run(second.run_id).data.tags[REMOVED_TAG] == "1"
    with open_store(settings.db_url) as store:
        assert SECRET not in set(labeled_feedback(store, settings.model_name)["text"])
        with store.session() as session:
            audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "forget")).one()
        assert audit.details["split_rows"] == 1 and SECRET not in str(audit.details)

    # The next retrain: new feedback plus what the champion's (rewritten) splits hold.
    more, more_truth = _texts("later", 15)
    insert_predictions(settings, second.version, registry.load(second.version), more, more_truth)
    with open_store(settings.db_url) as store:
        feedback = labeled_feedback(store, settings.model_name)
    third = retrain(settings, registry, feedback, trigger="test")
    parts = load_splits(registry.client, third.run_id, ["train", "validation", "test"])
    seen = set(pd.concat(parts.values())["text"])
    assert SECRET not in seen and texts[8] in seen and more[0] in seen
    assert SECRET not in _artifact_texts(artifacts)[0]


@pytest.mark.slow
def test_an_expired_feedback_text_leaves_the_splits_and_the_corpus_stays(
    settings: Settings, small_tweets: Dataset
) -> None:
    assert FEEDBACK_DOMAIN == GATE_FEEDBACK_DOMAIN
    texts, truth = _texts("feedback", 30)
    texts[3] = OLD
    corpus_text = str(small_tweets.frame["text"].iloc[0])
    texts[4] = corpus_text  # a corpus tweet sent as traffic: its corpus row is not logged data
    registry, second = _retrained_champion(settings, small_tweets, texts, truth)
    aged = datetime.now(UTC) - timedelta(days=120)
    with open_store(settings.db_url) as store, store.session() as session:
        query = select(Prediction).where(Prediction.text.in_([OLD, corpus_text]))
        for row in session.scalars(query):
            row.ts = aged  # past the retention period; the other predictions stay recent

    counts = purge(settings, older_than_days=90)
    in_parquet, raw = _artifact_texts(settings.home_dir / "artifacts")
    assert OLD not in in_parquet and OLD not in raw
    assert counts["predictions"] == 2 and counts["split_runs"] == [second.run_id]
    assert counts["split_rows"] == 1
    assert texts[5] in in_parquet, "recent feedback stays"
    parts = load_splits(registry.client, second.run_id, ["train", "validation", "test"])
    frame = pd.concat(parts.values())
    # Retention covers logged data: the operator's corpus row of the same text stays.
    assert set(frame.loc[frame["text"] == corpus_text, "domain"]) - {FEEDBACK_DOMAIN}
