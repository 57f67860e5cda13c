"""How the label queue orders unlabelled predictions: random, uncertainty, entropy, diverse.

Each strategy turns the candidates (logged predictions with their text and class probabilities)
into one full order, best first, with a priority per item (higher: label it sooner):

- ``random``: a seeded shuffle (the baseline every other strategy must beat);
- ``uncertainty``: smallest margin between the two most probable classes first
  (priority ``1 - margin``);
- ``entropy``: highest entropy of the class probabilities first (normalised to 0..1);
- ``diverse`` (the default): uncertainty within clusters: the texts are clustered on their TF-IDF
  vectors, each cluster gets a share of the picks proportional to its size (the coverage random
  sampling has), filled with its smallest-margin items, and an item nearly equal to one already
  picked waits until the end, so that one burst of near-duplicates cannot take the whole budget.

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
MAX_CLUSTERS = 50


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
        # the drifted window first: its clusters share the picks before any other's
        picks: list[int] = []
        drifted = [_drift_key(c, drifted_since) > 0 for c in candidates]
        for flag in (True, False):
            group = [i for i, d in enumerate(drifted) if d is flag]
            if group:
                within = _diverse_order([candidates[i] for i in group], [keys[i] for i in group],
                                        limit=limit, seed=seed)  # fmt: skip
                picks += [group[j] for j in within]
    else:
        picks = sorted(range(len(candidates)), key=lambda i: (-keys[i], candidates[i].request_id))
    return [(candidates[i], scores[i]) for i in picks]


def _drift_key(candidate: Candidate, drifted_since: datetime | None) -> float:
    """2 for an item logged in the drifted window (above any score: sorted before every other
    item), else 0."""
    return 2.0 if drifted_since is not None and candidate.ts >= drifted_since else 0.0


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
    """Uncertainty within clusters: each cluster of the texts gets a share of the ``limit`` picks
    proportional to its size, filled with its most uncertain items; near-duplicates of earlier
    picks wait; the items beyond every share follow by uncertainty."""
    n = len(candidates)
    vectors = _vectors([c.text for c in candidates])
    k = max(1, min(MAX_CLUSTERS, max(2, limit // 2), n // 10))
    labels = _clusters(vectors, k, seed) if k > 1 else np.zeros(n, dtype=np.int64)
    # inside a cluster: uncertainty times typicality (similarity to the cluster's mean vector,
    # information density): a typical uncertain tweet teaches more than an odd one
    dense = _typicality(vectors, labels)
    within = [keys[i] * dense[i] for i in range(n)]
    members: dict[int, list[int]] = {}
    for i in sorted(range(n), key=lambda i: (-within[i], candidates[i].request_id)):
        members.setdefault(int(labels[i]), []).append(i)
    quota = _shares({c: len(m) for c, m in members.items()}, limit)
    picks: list[int] = []
    for turn in range(max(quota.values(), default=0)):
        # the turn-th pick of every cluster whose share reaches it, most uncertain first
        row = [m[turn] for c, m in members.items() if turn < quota[c]]
        picks.extend(sorted(row, key=lambda i: (-keys[i], candidates[i].request_id)))
    chosen = set(picks)
    rest = [i for i in sorted(range(n), key=lambda i: (-keys[i], candidates[i].request_id))
            if i not in chosen]  # fmt: skip
    return _push_back_duplicates(picks + rest, vectors, check=limit + 50)


def _typicality(vectors: Any, labels: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Cosine similarity of each row to the mean vector of its cluster (0..1)."""
    out = np.zeros(vectors.shape[0], dtype=np.float64)
    for cluster in np.unique(labels):
        rows = np.flatnonzero(labels == cluster)
        centre = np.asarray(vectors[rows].mean(axis=0)).ravel()
        norm = np.linalg.norm(centre)
        if norm > 0:
            out[rows] = np.asarray(vectors[rows] @ (centre / norm)).ravel()
    return out


def _shares(sizes: dict[int, int], total: int) -> dict[int, int]:
    """``total`` split across clusters in proportion to their sizes (largest remainders), each at
    least one and at most its size."""
    n = sum(sizes.values())
    exact = {c: total * size / n for c, size in sizes.items()}
    share = {c: min(sizes[c], max(1, int(e))) for c, e in exact.items()}
    for c in sorted(exact, key=lambda c: (int(exact[c]) - exact[c], c)):
        if sum(share.values()) >= total:
            break
        if share[c] < sizes[c]:
            share[c] += 1
    return share


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
