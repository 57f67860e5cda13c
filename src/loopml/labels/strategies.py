"""How the label queue orders unlabelled predictions: random, uncertainty, entropy, diverse.

Each strategy turns the candidates (logged predictions with their text and class probabilities)
into one full order, best first, with a priority per item (higher: label it sooner):

- ``random``: a seeded shuffle (the baseline every other strategy must beat);
- ``uncertainty``: smallest margin between the two most probable classes first
  (priority ``1 - margin``);
- ``entropy``: highest entropy of the class probabilities first (normalised to 0..1);
- ``diverse`` (the default): margin uncertainty inside clusters of the texts' vectors, taken in
  turns across clusters, and an item nearly equal to one already picked waits until the end, so
  that one burst of near-duplicates cannot take the whole budget.

Every strategy but ``random`` puts the items logged inside the window the monitor last flagged
as drifted before the others (``drifted_since``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "Candidate",
    "entropy",
    "margin",
    "rank",
]

STRATEGIES: tuple[str, ...] = ("diverse", "uncertainty", "entropy", "random")
DEFAULT_STRATEGY = "diverse"

# Two texts whose TF-IDF vectors are at least this similar (cosine) count as near-duplicates.
DUPLICATE_SIMILARITY = 0.8
MAX_CLUSTERS = 20


@dataclass(frozen=True)
class Candidate:
    """One unlabelled logged prediction the queue may hand out."""

    request_id: str
    model_version: str
    text: str
    label: str
    probabilities: dict[str, float]
    ts: datetime


def margin(probabilities: dict[str, float]) -> float:
    """The most probable class's probability minus the second's (1 for a single class)."""
    top = sorted(probabilities.values(), reverse=True)
    if len(top) < 2:
        return 1.0
    return float(top[0] - top[1])


def entropy(probabilities: dict[str, float]) -> float:
    """Entropy of the class probabilities, divided by its maximum (0 sure .. 1 uniform)."""
    values = [p for p in probabilities.values() if p > 0]
    if len(probabilities) < 2:
        return 0.0
    return float(-sum(p * math.log(p) for p in values) / math.log(len(probabilities)))


def rank(
    candidates: Sequence[Candidate],
    strategy: str,
    *,
    limit: int,
    drifted_since: datetime | None = None,
    seed: int = 0,
) -> list[tuple[Candidate, float]]:
    """Every candidate once, best first, with its priority under ``strategy``.

    ``limit`` is how many will likely be handed out: the diverse strategy sizes its clusters and
    its near-duplicate check by it. Raises ``ValueError`` for an unknown strategy.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if not candidates:
        return []
    if strategy == "random":
        order = list(candidates)
        rng = random.Random(seed)
        rng.shuffle(order)
        n = len(order)
        return [(c, 1.0 - i / n) for i, c in enumerate(order)]
    if strategy == "entropy":
        scores = [entropy(c.probabilities) for c in candidates]
    else:
        scores = [1.0 - margin(c.probabilities) for c in candidates]
    keys = [_drift_key(c, drifted_since) + s for c, s in zip(candidates, scores, strict=True)]
    if strategy == "diverse":
        picks = _diverse_order(candidates, keys, limit=limit, seed=seed)
    else:
        picks = sorted(range(len(candidates)), key=lambda i: (-keys[i], candidates[i].request_id))
    return [(candidates[i], scores[i]) for i in picks]


def _drift_key(candidate: Candidate, drifted_since: datetime | None) -> float:
    """1 for an item logged in the drifted window (sorted before every other), else 0."""
    return 1.0 if drifted_since is not None and candidate.ts >= drifted_since else 0.0


def _vectors(texts: Sequence[str]) -> Any:
    """L2-normalised TF-IDF vectors of hashed word 1-2 grams (no vocabulary to fit or store)."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    hashed = HashingVectorizer(
        n_features=2**18, ngram_range=(1, 2), alternate_sign=False, norm=None
    ).transform(texts)
    return TfidfTransformer(sublinear_tf=True).fit_transform(hashed)


def _clusters(vectors: Any, k: int, seed: int) -> npt.NDArray[np.int64]:
    """Cluster of each row: k-means on a 32-dimensional SVD of the vectors."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    used = vectors[:, np.unique(vectors.indices)]  # hashed columns that occur: SVD stays small
    n_rows, n_cols = used.shape
    dims = min(32, n_rows - 1, n_cols - 1)
    if dims < 2:
        return np.zeros(n_rows, dtype=np.int64)
    # one thread: the queue answers a request; BLAS thread pools thrash on a busy machine
    with threadpool_limits(1):
        dense = normalize(TruncatedSVD(dims, n_iter=3, random_state=seed).fit_transform(used))
        model = MiniBatchKMeans(n_clusters=k, n_init=3, random_state=seed, batch_size=1024)
        return np.asarray(model.fit_predict(dense), dtype=np.int64)


def _diverse_order(
    candidates: Sequence[Candidate], keys: list[float], *, limit: int, seed: int
) -> list[int]:
    """Turns across clusters, most uncertain first in each; near-duplicates of picks wait."""
    n = len(candidates)
    vectors = _vectors([c.text for c in candidates])
    k = max(1, min(MAX_CLUSTERS, max(2, limit), n // 2))
    labels = _clusters(vectors, k, seed) if k > 1 else np.zeros(n, dtype=np.int64)
    queues: dict[int, list[int]] = {}
    for i in sorted(range(n), key=lambda i: (-keys[i], candidates[i].request_id)):
        queues.setdefault(int(labels[i]), []).append(i)
    interleaved: list[int] = []
    # each round takes the best remaining item of every cluster, best cluster first
    while queues:
        heads = sorted(queues, key=lambda c: (-keys[queues[c][0]], c))
        for cluster in heads:
            interleaved.append(queues[cluster].pop(0))
            if not queues[cluster]:
                del queues[cluster]
    return _push_back_duplicates(interleaved, vectors, check=limit * 2 + 50)


def _push_back_duplicates(order: list[int], vectors: Any, *, check: int) -> list[int]:
    """``order`` with each item nearly equal to an earlier pick moved to the end (for the first
    ``check`` picks; the rest keep their order)."""
    picked: list[int] = []
    waiting: list[int] = []
    for position, i in enumerate(order):
        if len(picked) >= check:
            picked.extend(order[position:])
            break
        if picked:
            similarity = vectors[picked] @ vectors[i].T
            if similarity.max() >= DUPLICATE_SIMILARITY:
                waiting.append(i)
                continue
        picked.append(i)
    return picked + waiting
