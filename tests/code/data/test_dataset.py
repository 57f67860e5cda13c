from __future__ import annotations

import pandas as pd
import pytest

from loopml.data import Dataset, content_version, split_dataset
from loopml.errors import DataError


def test_version_depends_on_content_only(small_tweets: Dataset) -> None:
    copy = small_tweets.frame.copy()
    assert content_version(copy) == small_tweets.version
    copy.iloc[0, copy.columns.get_loc("label")] = (
        "neutral" if copy.iloc[0]["label"] != "neutral" else "positive"
    )
    assert content_version(copy) != small_tweets.version


def test_split_is_deterministic_disjoint_and_proportional(small_tweets: Dataset) -> None:
    a = split_dataset(small_tweets, seed=1)
    b = split_dataset(small_tweets, seed=1)
    c = split_dataset(small_tweets, seed=2)
    assert a.test.index.equals(b.test.index)
    assert not a.test.index.equals(c.test.index)
    parts = [set(a.train.index), set(a.validation.index), set(a.test.index)]
    assert sum(map(len, parts)) == len(small_tweets.frame)
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    whole = small_tweets.frame["label"].value_counts(normalize=True)
    test = a.test["label"].value_counts(normalize=True)
    # A hash split is not stratified: on 400 test rows a class's share wanders by ~2.4 points.
    assert (whole - test).abs().max() < 0.06
    assert 0.08 < len(a.test) / len(small_tweets.frame) < 0.12


def test_a_row_keeps_its_split_when_the_data_grows(tweets: Dataset) -> None:
    old_frame = tweets.frame.sample(3000, random_state=3)
    old = Dataset("old", old_frame, content_version(old_frame))
    rest = tweets.frame.drop(old_frame.index)
    grown_frame = pd.concat([old.frame, rest.sample(1500, random_state=4)]).sample(
        frac=1.0, random_state=5
    )
    grown = Dataset("grown", grown_frame, content_version(grown_frame))
    before, after = split_dataset(old, seed=1), split_dataset(grown, seed=1)
    for name in ("train", "validation", "test"):
        kept = set(getattr(after, name).index) & set(old.frame.index)
        assert kept == set(getattr(before, name).index), name
    # So the model trained on the old data never trained on a row of the new test split.
    assert not set(before.train["text"]) & set(after.test["text"])


def test_duplicate_texts_share_a_split() -> None:
    frame = pd.DataFrame(
        {"text": [f"t{i % 50}" for i in range(200)], "label": ["a", "b"] * 100, "domain": "x"}
    )
    s = split_dataset(Dataset("mem", frame, content_version(frame)), seed=0)
    parts = [set(s.train["text"]), set(s.validation["text"]), set(s.test["text"])]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])


def test_describe(small_tweets: Dataset) -> None:
    info = small_tweets.describe()
    assert info["rows"] == len(small_tweets.frame)
    assert set(info["labels"]) == {"negative", "neutral", "positive"}  # type: ignore[arg-type]


def test_tiny_classes_still_split() -> None:
    frame = pd.DataFrame(
        {
            "text": [f"t{i}" for i in range(40)],
            "label": ["a"] * 30 + ["b"] * 10,
            "domain": ["x"] * 39 + ["y"],
        }
    )
    ds = Dataset("mem", frame, content_version(frame))
    s = split_dataset(ds, seed=0)
    assert set(s.test["label"]) == set(s.validation["label"]) == {"a", "b"}


def test_a_class_too_small_to_split_is_a_data_error() -> None:
    frame = pd.DataFrame(
        {"text": [f"t{i}" for i in range(35)], "label": ["a"] * 30 + ["b"] * 5, "domain": "x"}
    )
    ds = Dataset("mem.csv", frame, content_version(frame))
    with pytest.raises(DataError, match=r"mem.csv: too few rows to split: class 'b' \(5\)"):
        split_dataset(ds, seed=0)
