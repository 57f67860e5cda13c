"""The identity terms the swap test probes are the ones the default recipe masks: one list."""

from __future__ import annotations

import pytest

from loopml.pipeline.behavioral import _SWAPS, IDENTITY_SWAP
from loopml.recipes import get_recipe
from loopml.recipes.identity import IDENTITY_TERMS, IDENTITY_TOKEN, mask_identity_terms

T = IDENTITY_TOKEN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my Muslim friend said hi", f"my {T} friend said hi"),
        ("GAY and gay and Gays", f"{T} and {T} and {T}"),
        ("a female and a male", f"a {T} and a {T}"),  # "female" is not "male" + "fe"
        ("@AmericanAir lost my bag", "@AmericanAir lost my bag"),  # a handle, not the term
        ("American Airlines, Americans", f"{T} Airlines, {T}"),
        ("christianity and Chinatown", "christianity and Chinatown"),  # whole words only
    ],
)
def test_mask_replaces_whole_identity_words_only(text: str, expected: str) -> None:
    assert mask_identity_terms(text) == expected


def test_the_swap_test_probes_exactly_the_masked_terms() -> None:
    _, fillings = _SWAPS[IDENTITY_SWAP]
    assert fillings == [f"my {term} friend" for term in IDENTITY_TERMS]
    assert {mask_identity_terms(f) for f in fillings} == {f"my {T} friend"}


def test_the_default_recipe_cannot_tell_identity_terms_apart() -> None:
    # Training data where "muslim" only ever comes with the negative label.
    texts = ["my muslim neighbour, awful", "muslim people everywhere, terrible"] * 3 + [
        "great day",
        "lovely great food",
        "good morning",
    ] * 2
    labels = ["negative"] * 6 + ["positive"] * 6
    swapped = [f"my {term} friend is great" for term in IDENTITY_TERMS]
    masked = get_recipe("tfidf-logreg", {"min_df": 1}).fit(texts, labels)
    proba = masked.predict_proba(swapped)
    assert (proba == proba[0]).all()
    assert "muslim" not in masked.pipeline.named_steps["tfidf"].vocabulary_
    assert {"muslim", "gays", T} <= masked.vocabulary()  # known words for OOV drift
    unmasked = get_recipe("tfidf-logreg", {"min_df": 1, "mask_identity": False}).fit(texts, labels)
    assert len(set(unmasked.predict(swapped))) == 2  # "Muslim" alone turns it negative
