"""Data 3 of the ML Test Score: each feature tfidf-logreg keeps (or drops for its size) has its
cost measured. Whether a kept feature helps (Data 2) is tests/model/test_features_help.py."""

from __future__ import annotations

import pytest
from sklearn.model_selection import train_test_split

from loopml.data import Dataset
from loopml.pipeline.ablation import FEATURES, ablate


@pytest.mark.slow
def test_feature_costs_are_measured_and_bigrams_and_min_df_pay_their_size(
    tweets: Dataset,
) -> None:
    sample, _ = train_test_split(
        tweets.frame, train_size=6000, random_state=3, stratify=tweets.frame["label"]
    )
    rows = ablate(sample["text"].tolist(), sample["label"].tolist(), folds=3, seed=3)
    by_name = {r.feature: r for r in rows}
    print("\n" + "\n".join(f"{r.feature}: {r.macro_f1:.4f} (delta {r.delta:+.4f})" for r in rows))
    assert list(by_name) == ["none (full recipe)", *(f"without {f}" for f in FEATURES)]
    full = by_name["none (full recipe)"]
    assert full.macro_f1 > 0.6
    # Bigrams: the costliest feature group, reported against unigrams.
    unigrams = by_name["without bigrams"]
    assert full.vocabulary > 2 * unigrams.vocabulary
    assert full.model_bytes > 2 * unigrams.model_bytes
    # min_df=2 is kept for its cost: without it the vocabulary and the model are 2x+ bigger.
    no_min_df = by_name["without min_df"]
    assert no_min_df.vocabulary > 2 * full.vocabulary
    assert no_min_df.model_bytes > 2 * full.model_bytes
