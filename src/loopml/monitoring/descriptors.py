"""Text descriptors that need no downloads: length, URLs, @mentions, hashtags, non-ASCII, OOV rate.

Evidently's own text descriptors rely on nltk data fetched at run time, which offline machines
cannot do; these are plain regular expressions over the logged text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt
import pandas as pd

from loopml.recipes.base import TextClassifier

__all__ = ["SURFACE_DESCRIPTORS", "model_vocabulary", "oov_rates", "surface_descriptors"]

# Each is a share of texts (0/1 per text) except length, which is characters.
SURFACE_DESCRIPTORS = ("length", "urls", "mentions", "hashtags", "non_ascii")

_URL = r"(?:https?://|www\.)\S+"
_MENTION = r"(?<!\w)@\w"
_HASHTAG = r"(?<!\w)#\w"
_NON_ASCII = r"[^\x00-\x7f]"
# scikit-learn's default token pattern, so OOV counts words the way the TF-IDF recipe sees them.
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def surface_descriptors(texts: pd.Series) -> pd.DataFrame:
    """One row per text: its length and whether it holds a URL, @mention, hashtag, non-ASCII."""
    texts = texts.astype(str)
    return pd.DataFrame(
        {
            "length": texts.str.len().astype(float),
            "urls": texts.str.contains(_URL, regex=True).astype(float),
            "mentions": texts.str.contains(_MENTION, regex=True).astype(float),
            "hashtags": texts.str.contains(_HASHTAG, regex=True).astype(float),
            "non_ascii": texts.str.contains(_NON_ASCII, regex=True).astype(float),
        },
        index=texts.index,
    )


def model_vocabulary(classifier: TextClassifier) -> frozenset[str] | None:
    """The words the model was trained on, or None for recipes that do not expose one."""
    vocabulary = getattr(classifier, "vocabulary", None)
    if not callable(vocabulary):
        return None
    return frozenset(str(term) for term in vocabulary())


def oov_rates(texts: Iterable[str], vocabulary: frozenset[str]) -> npt.NDArray[np.float64]:
    """Per text, the share of its words the model never saw in training (0 for no words)."""
    rates = []
    for text in texts:
        words = _TOKEN.findall(str(text).lower())
        unknown = sum(1 for w in words if w not in vocabulary)
        rates.append(unknown / len(words) if words else 0.0)
    return np.asarray(rates, dtype=np.float64)
