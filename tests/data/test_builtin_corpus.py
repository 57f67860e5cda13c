"""Expectations on the built-in CrowdFlower tweets: what the demo and the drift tests rely on."""

from __future__ import annotations

from loopml.data import Dataset, load_dataset


def test_size_labels_and_uniqueness(tweets: Dataset) -> None:
    frame = tweets.frame
    assert 37_000 <= len(frame) <= 38_157  # 38,157 raw rows minus duplicate tweets
    assert tweets.labels == ["negative", "neutral", "positive"]
    assert frame["text"].is_unique
    assert (frame["text"].str.strip().str.len() > 0).all()
    assert not frame["text"].str.contains("\r").any()


def test_class_balance_is_as_measured(tweets: Dataset) -> None:
    share = tweets.frame["label"].value_counts(normalize=True)
    assert 0.40 < share["negative"] < 0.46
    assert 0.36 < share["neutral"] < 0.42
    assert 0.16 < share["positive"] < 0.21


def test_domains_carry_a_real_shift(tweets: Dataset) -> None:
    frame = tweets.frame
    counts = frame["domain"].value_counts()
    assert set(counts.index) == {"airline", "apple", "cars", "other"}
    assert 13_500 < counts["airline"] < 15_000
    airline = frame[frame["domain"] == "airline"]["label"].value_counts(normalize=True)
    rest = frame[frame["domain"] != "airline"]["label"].value_counts(normalize=True)
    assert airline["negative"] > 0.6 > rest["negative"], "airline tweets are mostly complaints"
    cars = frame[frame["domain"] == "cars"]["label"].value_counts(normalize=True)
    assert cars["neutral"] > 0.75


def test_version_is_stable_across_loads(tweets: Dataset) -> None:
    assert load_dataset("builtin:tweets").version == tweets.version
