"""Data 1 of the ML Test Score: retraining validates the champion's data plus the feedback rows
by the training data's schema and bounds; bad feedback rows stop it before anything trains."""

from __future__ import annotations

import pandas as pd
import pytest

from loopml.config import Settings
from loopml.control.promotion import promote
from loopml.control.retrain import retrain
from loopml.data import Dataset
from loopml.errors import ValidationError
from loopml.pipeline.train import train
from loopml.registry import Registry
from loopml.store import open_store


@pytest.mark.slow
def test_retrain_refuses_bad_feedback_rows_and_names_them(
    settings: Settings, small_tweets: Dataset, tweets: Dataset
) -> None:
    s = settings.model_copy(update={"gate_min_slice_f1": 0.2})
    registry = Registry(s)
    train(s, dataset=small_tweets)
    with open_store(s.db_url) as store:
        promote(store, registry, "1")
    seen = set(small_tweets.frame["text"])
    fresh = tweets.frame[~tweets.frame["text"].isin(seen)].head(40)
    texts = fresh["text"].tolist()
    texts[5] = "my flight was late " * 300  # 5,700 characters: over LOOPML_MAX_TEXT_CHARS
    texts[9] = "   "  # blank
    feedback = pd.DataFrame({"text": texts, "label": fresh["label"].tolist(), "key_id": "k1"})

    with pytest.raises(ValidationError) as info:
        retrain(s, registry, feedback, trigger="drift")
    error = info.value
    assert error.source == "builtin:tweets[sample 4000]+feedback (rows 4001-4040 are feedback)"
    assert error.problems == [
        "column 'text': empty text: row 4010",
        "column 'text': text longer than 5000 characters: row 4006",
    ]
    assert [str(v.version) for v in registry.versions()] == ["1"]  # nothing trained or registered

    # The same rows without the two bad ones pass validation (and would train).
    lower = s.model_copy(update={"max_text_chars": 6000, "data_min_class_share": 0.5})
    good = feedback.drop(index=[9])
    with pytest.raises(ValidationError) as info:
        retrain(lower, registry, good, trigger="drift")
    # Bounds come from the settings: a 50% class floor now names every class by its share.
    assert all("LOOPML_DATA_MIN_CLASS_SHARE is 50.00%" in p for p in info.value.problems)
    assert len(info.value.problems) == 3
