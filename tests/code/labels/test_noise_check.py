"""Label noise caught before it trains: on real tweets with 10% of the feedback labels flipped,
confident learning holds back mostly flipped rows, and a model trained without them beats one
trained on all of them on a clean test split. Reviewed rows follow their decision; the guard
holds nothing back when the check marks too much."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, log_loss

from loopml.config import Settings
from loopml.data.sources import builtin_corpus_path
from loopml.labels.noise import decide, review_rows, screen_feedback, trainable
from loopml.recipes import get_recipe
from loopml.store import open_store

# A careless annotator's flips: class-conditional (as confident learning models them), towards
# the minority class, where they cost macro-F1 most: anything not positive becomes positive.
FLIP = {"negative": "positive", "neutral": "positive", "positive": "negative"}


@functools.cache
def agreed_tweets() -> pd.DataFrame:
    """The built-in tweets whose CrowdFlower annotators all agreed (confidence 1), shuffled:
    little label noise of their own, so the flipped labels are what the check should find."""
    raw = pd.read_csv(builtin_corpus_path(), encoding="latin-1")
    raw = raw[raw["confidence"] >= 1.0]
    frame = pd.DataFrame({"text": raw["text"].astype(str).str.strip(), "label": raw["sentiment"]})
    frame = frame[frame["text"] != ""].drop_duplicates("text")
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def flipped(rows: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``rows`` with ``share`` of their labels flipped (seeded), and which ones."""
    rng = np.random.default_rng(seed)
    flip = rng.random(len(rows)) < share
    noisy = rows.copy()
    noisy.loc[flip, "label"] = noisy.loc[flip, "label"].map(FLIP)
    return noisy.assign(key_id="k1"), flip


def scores(train: pd.DataFrame, test: pd.DataFrame) -> tuple[float, float]:
    """Test log loss and macro-F1 of the default recipe trained on ``train``."""
    model = get_recipe("tfidf-logreg").fit(train["text"].tolist(), train["label"].tolist())
    proba = model.predict_proba(test["text"].tolist())
    classes = [str(c) for c in model.classes]
    predicted = [classes[i] for i in proba.argmax(axis=1)]
    loss = log_loss(test["label"], proba, labels=classes)
    return float(loss), float(f1_score(test["label"], predicted, average="macro"))


@pytest.mark.slow
def test_flipped_feedback_is_held_back_and_the_model_trained_without_it_is_better(
    settings: Settings,
) -> None:
    tweets = agreed_tweets()
    base, fresh, test = tweets.iloc[:500], tweets.iloc[500:3500], tweets.iloc[3500:6500]
    feedback, flip = flipped(fresh, 0.10, seed=0)
    s = settings.model_copy(update={"noise_check": True})  # and the other defaults
    with open_store(s.db_url) as store:
        kept, report = screen_feedback(
            s, store, get_recipe("tfidf-logreg"), base, feedback, model_name="m"
        )
        held = review_rows(store, "m")
    was_held = ~feedback.index.isin(kept.index)
    true_held = int((was_held & flip).sum())
    precision, recall = true_held / was_held.sum(), true_held / flip.sum()
    loss_all, f1_all = scores(pd.concat([base, feedback]), test)
    loss_kept, f1_kept = scores(pd.concat([base, kept]), test)
    print(
        f"\nflipped {flip.sum()} of {len(feedback)}; held {was_held.sum()}: precision "
        f"{precision:.3f} recall {recall:.3f}; log loss all {loss_all:.4f}, without held "
        f"{loss_kept:.4f}; macro-F1 all {f1_all:.4f}, without held {f1_kept:.4f}; "
        f"check {report.seconds:.1f}s"
    )
    assert report.checked == len(feedback) and report.held_new == was_held.sum() == len(held)
    assert not report.guard_tripped
    given = dict(zip(feedback["text"], feedback["label"], strict=True))
    assert all(given[r["text"]] == r["label"] != r["suggested"] for r in held)  # as given
    # Measured (flip seeds 0, 1, 2): precision 0.51-0.53, recall 0.69-0.73. The model trained
    # without the held rows is better calibrated: test log loss 0.530 -> 0.504 (0.528 -> 0.502,
    # 0.522 -> 0.498), half of what removing exactly the flipped rows gives (0.471). Its
    # macro-F1 moves within the test split's noise (+0.000, +0.000, +0.005; the oracle's +0.016):
    # logistic regression on tf-idf shrugs off 10% flips in its decisions, not in its scores.
    assert precision >= 0.45 and recall >= 0.65
    assert loss_all - loss_kept >= 0.015
    assert f1_kept >= f1_all - 0.01


def _small(seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    tweets = agreed_tweets()
    feedback, _ = flipped(tweets.iloc[300:500], 0.10, seed=seed)
    return tweets.iloc[:300], feedback


def test_reviewed_rows_follow_the_decision_and_held_rows_stay_out(settings: Settings) -> None:
    base, feedback = _small()
    s = settings.model_copy(update={"noise_check": True, "noise_max_fraction": 0.5})
    recipe = get_recipe("tfidf-logreg")
    with open_store(s.db_url) as store:
        kept, first = screen_feedback(s, store, recipe, base, feedback, model_name="m")
        held = review_rows(store, "m")
        assert first.held_new == len(held) >= 3
        assert len(kept) == len(feedback) - len(held)  # held rows do not train now
        assert not set(kept["text"]) & {r["text"] for r in held}
        accepted, rejected = held[0], held[1]
        decide(store, [accepted["id"]], "accepted", reason="right", actor="ann", model_name="m")
        decide(store, [rejected["id"]], "rejected", reason="wrong", actor="ann", model_name="m")
        again, second = screen_feedback(s, store, recipe, base, feedback, model_name="m")
        audit = store.history("m", limit=5)
        counted = trainable(store, "m", feedback)  # what the controller counts as new labels
    assert set(counted["text"]) == set(again["text"])
    texts = set(again["text"])
    assert accepted["text"] in texts  # an accepted label trains next time
    assert rejected["text"] not in texts  # a rejected one never does
    assert not any(r["text"] in texts for r in held[2:])  # still waiting: still out
    assert (second.accepted, second.rejected, second.held_pending) == (1, 1, len(held) - 2)
    assert second.checked == len(feedback) - len(held)  # decided and held rows are not rechecked
    assert [a.action for a in audit[:2]] == ["feedback_reject", "feedback_accept"]
    assert audit[0].details["review_ids"] == [rejected["id"]] and audit[0].actor == "ann"


def test_the_guard_holds_nothing_back_when_the_check_marks_too_much(settings: Settings) -> None:
    base, feedback = _small()
    s = settings.model_copy(update={"noise_check": True, "noise_max_fraction": 0.01})
    with open_store(s.db_url) as store:
        kept, report = screen_feedback(
            s, store, get_recipe("tfidf-logreg"), base, feedback, model_name="m"
        )
        assert review_rows(store, "m", status=None) == []
    assert report.guard_tripped and report.flagged > 0.01 * len(feedback)
    assert report.held_back == 0 and len(kept) == len(feedback)
    assert report.tags()["loopml.noise.guard"].startswith(f"tripped: {report.flagged} of 200")
