"""Identity terms: the one list that the behavioral swap test probes and recipes neutralise.

The swap test (:mod:`loopml.pipeline.behavioral`) fills templates with ``my {term} friend``; a
model whose label changes with the term fails the gate's ``identity_flips`` check. The default
recipe (:mod:`loopml.recipes.tfidf_logreg`, ``mask_identity``) replaces each term with
:data:`IDENTITY_TOKEN` before vectorizing, so the same list that is tested is the one a model
cannot tell apart. Add a term here and both change together.
"""

from __future__ import annotations

import re

__all__ = ["IDENTITY_TERMS", "IDENTITY_TOKEN", "mask_identity_terms"]

#: Religion, nationality, sexual orientation and gender terms; the first is the swap test's
#: reference. In the built-in tweets "Muslim" is 19 of 22 times negative, "gay" 13 of 17.
IDENTITY_TERMS: tuple[str, ...] = (
    "Christian",
    "Muslim",
    "Jewish",
    "Hindu",
    "Mexican",
    "Chinese",
    "American",
    "Nigerian",
    "gay",
    "female",
    "male",
)

#: What every identity term becomes: one word-like token, so TF-IDF still sees that some identity
#: was named (and its n-grams with the words around it), never which one.
IDENTITY_TOKEN = "identityterm"

# Whole words only, plural too: "female" is not "male", "@AmericanAir" is not "American".
_TERMS = re.compile(
    r"\b(?:" + "|".join(re.escape(t) for t in IDENTITY_TERMS) + r")s?\b", re.IGNORECASE
)


def mask_identity_terms(text: str) -> str:
    """``text`` with every identity term (any case, singular or plural) replaced by the token."""
    return _TERMS.sub(IDENTITY_TOKEN, text)
