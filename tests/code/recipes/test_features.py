"""Data 6 of the ML Test Score: the feature code of tfidf-logreg (URL stripping and the
vectorizer each parameter configures) is unit-tested."""

from __future__ import annotations

import pytest

from loopml.recipes import get_recipe
from loopml.recipes.tfidf_logreg import strip_urls, strip_urls_mask_identity

TEXTS = [
    "Great flight @united http://t.co/abc",
    "awful delay www.example.com/x again",
    "the crew was great",
    "lost my bag, awful",
    "great crew great food",
    "awful service awful seat",
]
LABELS = ["positive", "negative", "positive", "negative", "positive", "negative"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Great https://t.co/Ab1 flight", "great   flight"),
        ("see www.Example.com/path now", "see   now"),
        ("HTTP://Shout.example OK", "  ok"),  # lower-cased first: upper-case schemes go too
        ("no link at all", "no link at all"),
        ("two http://a.b and http://c.d", "two   and  "),
        ("", ""),
    ],
)
def test_strip_urls(text: str, expected: str) -> None:
    assert strip_urls(text) == expected


def test_parameters_configure_the_vectorizer() -> None:
    params = {
        "ngram_max": 1,
        "min_df": 1,
        "sublinear_tf": True,
        "strip_urls": False,
        "mask_identity": False,
    }
    vectorizer = get_recipe("tfidf-logreg", params).fit(TEXTS, LABELS).pipeline.named_steps["tfidf"]
    assert vectorizer.ngram_range == (1, 1) and vectorizer.min_df == 1
    assert vectorizer.sublinear_tf is True and vectorizer.preprocessor is None
    assert "http" in vectorizer.vocabulary_  # URLs kept as words without stripping


def test_defaults_strip_urls_and_use_bigrams_seen_twice() -> None:
    model = get_recipe("tfidf-logreg").fit(TEXTS, LABELS)
    vectorizer = model.pipeline.named_steps["tfidf"]
    assert vectorizer.preprocessor is strip_urls_mask_identity and vectorizer.sublinear_tf is False
    vocabulary = set(vectorizer.vocabulary_)
    assert {"great", "awful", "crew"} <= vocabulary
    assert "great crew" not in vocabulary  # once only: under min_df=2
    assert not {"http", "co", "www", "example"} & vocabulary
    # words with one document only (min_df=2) and URL parts never become features
    assert "bag" not in vocabulary
