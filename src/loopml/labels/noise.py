"""Label noise caught before it trains: feedback labels that look wrong wait for a reviewer.

Before a retrain, each new feedback row gets an out-of-fold probability for every class: the
feedback is cut in ``LOOPML_NOISE_FOLDS`` folds and the champion's recipe is fitted on the
trusted base rows (a seeded sample of at most ``LOOPML_NOISE_BASE_ROWS`` of the champion's train
split) plus the other folds, then scores the held-out fold. Confident learning
(``cleanlab.filter.find_label_issues``, rule ``LOOPML_NOISE_METHOD``) marks the rows whose label
disagrees with those probabilities more than the estimated noise rates explain. Only feedback is
checked: the base dataset is trusted. Of the marked rows, only those whose label's out-of-fold
probability is at most ``LOOPML_NOISE_THRESHOLD`` are held back (real tweets have hard, ambiguous
rows too: they are worth training on, and a reviewer's time).

Marked rows are held back: stored in ``feedback_review`` with status ``held``, left out of this
retrain and of the next ones until a reviewer decides (``loopml feedback accept|reject``, both
audited). An accepted label trains next time and is not checked again; a rejected one never
trains. A guard: when the check marks more than ``LOOPML_NOISE_MAX_FRACTION`` of the feedback
(a shift of the labels looks like noise to a model of the old data), nothing is held back and
the retrain records and audits that the guard tripped: the gate judges the labels instead.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import select, update

from loopml.errors import ConflictError, NotFoundError, RequestError
from loopml.store import FeedbackReview, Store

if TYPE_CHECKING:
    from loopml.config import Settings
    from loopml.recipes import Recipe

__all__ = [
    "HELD",
    "NoiseReport",
    "decide",
    "find_noisy",
    "out_of_fold_probabilities",
    "review_rows",
    "review_status",
    "screen_feedback",
    "set_run",
    "text_hash",
    "trainable",
]

log = logging.getLogger(__name__)

HELD, ACCEPTED, REJECTED = "held", "accepted", "rejected"
Decision = Literal["accepted", "rejected"]
# Fewer feedback rows than this are not cross-validated (too few per fold to say anything).
MIN_ROWS = 50


@dataclass
class NoiseReport:
    """What the noise check did before one retrain (to the run, the audit record, the result)."""

    enabled: bool
    method: str
    threshold: float = 1.0
    checked: int = 0  # feedback rows the check scored this time
    flagged: int = 0  # rows it marked as likely mislabelled
    held_new: int = 0  # of those, held back now (0 when the guard tripped)
    held_pending: int = 0  # held by an earlier check, still waiting for a decision
    rejected: int = 0  # rejected by a reviewer: never train
    accepted: int = 0  # accepted by a reviewer: train, not checked again
    max_fraction: float = 1.0
    guard_tripped: bool = False
    skipped: str | None = None  # why the check did not run, if it did not
    seconds: float = 0.0
    held_ids: list[int] = field(default_factory=list)  # feedback_review ids held now

    @property
    def held_back(self) -> int:
        """Feedback rows this retrain leaves out: held now, still held, rejected."""
        return self.held_new + self.held_pending + self.rejected

    @classmethod
    def off(cls, settings: Settings) -> NoiseReport:
        """The report of a retrain with the check switched off."""
        return cls(
            enabled=False,
            method=settings.noise_method,
            threshold=settings.noise_threshold,
            max_fraction=settings.noise_max_fraction,
            skipped="LOOPML_NOISE_CHECK is off",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return asdict(self) | {"held_back": self.held_back}

    def metrics(self) -> dict[str, float]:
        """The counts as MLflow metrics (``noise_*``)."""
        names = ("checked", "flagged", "held_new", "held_pending", "rejected", "accepted")
        counts = {f"noise_{n}": float(getattr(self, n)) for n in names}
        return counts | {
            "noise_held_back": float(self.held_back),
            "noise_guard_tripped": float(self.guard_tripped),
            "noise_seconds": round(self.seconds, 3),
        }

    def tags(self) -> dict[str, str]:
        """The verdict as MLflow tags (``loopml.noise.*``)."""
        tags = {"loopml.noise.method": self.method, "loopml.noise.held_back": str(self.held_back)}
        if self.skipped:
            tags["loopml.noise.skipped"] = self.skipped[:4000]
        if self.guard_tripped:
            tags["loopml.noise.guard"] = (
                f"tripped: {self.flagged} of {self.checked} flagged > {self.max_fraction:g}"
            )
        return tags


def text_hash(text: str) -> str:
    """SHA-256 of a text (hex), the key of its review row with the label."""
    return hashlib.sha256(text.encode()).hexdigest()


def out_of_fold_probabilities(
    recipe: Recipe,
    base: pd.DataFrame,
    feedback: pd.DataFrame,
    classes: Sequence[str],
    *,
    folds: int,
    seed: int,
) -> npt.NDArray[np.float64]:
    """Each ``feedback`` row's class probabilities (columns in the order of ``classes``) from
    ``recipe`` fitted on ``base`` plus the feedback folds the row is not in."""
    from sklearn.model_selection import KFold

    probs = np.zeros((len(feedback), len(classes)))
    texts, labels = feedback["text"].tolist(), feedback["label"].tolist()
    base_texts, base_labels = base["text"].tolist(), base["label"].tolist()
    cuts = KFold(n_splits=folds, shuffle=True, random_state=seed).split(np.arange(len(feedback)))
    for train_idx, test_idx in cuts:
        model = recipe.fit(
            base_texts + [texts[i] for i in train_idx],
            base_labels + [labels[i] for i in train_idx],
        )
        fold = model.predict_proba([texts[i] for i in test_idx])
        for column, label in enumerate(classes):
            if label in model.classes:
                probs[test_idx, column] = fold[:, model.classes.index(label)]
    return probs


def find_noisy(
    labels: Sequence[str],
    probs: npt.NDArray[np.float64],
    classes: Sequence[str],
    *,
    method: str,
    threshold: float = 1.0,
) -> npt.NDArray[np.bool_]:
    """Which ``labels`` confident learning (cleanlab's ``filter_by=method``) marks as likely
    wrong, given out-of-fold ``probs``, among those whose probability is at most ``threshold``."""
    from cleanlab.filter import find_label_issues

    given = np.array([list(classes).index(label) for label in labels])
    # n_jobs=1: no process pool inside the controller (and none needed for a few thousand rows)
    found = find_label_issues(given, probs, filter_by=method, n_jobs=1)
    flagged = np.asarray(found, dtype=bool)
    confident: npt.NDArray[np.bool_] = probs[np.arange(len(given)), given] <= threshold
    return flagged & confident


def _decisions(store: Store, model_name: str) -> dict[tuple[str, str], str]:
    query = select(FeedbackReview.text_hash, FeedbackReview.label, FeedbackReview.status).where(
        FeedbackReview.model_name == model_name
    )
    with store.session() as session:
        return {(h, label): status for h, label, status in session.execute(query).all()}


def review_status(store: Store, model_name: str, rows: pd.DataFrame) -> pd.Series:
    """Each row's review status (held, rejected or accepted; None: never held back)."""
    known = _decisions(store, model_name)
    hashes = rows["text"].map(text_hash)
    return pd.Series(
        [known.get((h, label)) for h, label in zip(hashes, rows["label"], strict=True)],
        index=rows.index,
        dtype=object,
    )


def trainable(store: Store, model_name: str, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` less those held back for review or rejected on review: what a retrain may use
    (the controller counts only these as new labels)."""
    status = review_status(store, model_name, rows)
    return rows[(status == ACCEPTED) | status.isna()]


def screen_feedback(
    settings: Settings,
    store: Store,
    recipe: Recipe,
    base: pd.DataFrame,
    rows: pd.DataFrame,
    *,
    model_name: str,
) -> tuple[pd.DataFrame, NoiseReport]:
    """``rows`` (new feedback: text, label, key_id) less those held back, and what was done.

    Rows decided earlier follow the decision, rows still held stay out; the check scores the
    rest against ``base`` (trusted: the champion's train split) and holds back what it marks,
    unless that is more than ``LOOPML_NOISE_MAX_FRACTION`` of them (the guard)."""
    report = NoiseReport(
        enabled=settings.noise_check,
        method=settings.noise_method,
        threshold=settings.noise_threshold,
        max_fraction=settings.noise_max_fraction,
    )
    if rows.empty:
        report.skipped = "no new feedback rows"
        return rows, report
    start = time.perf_counter()
    status = review_status(store, model_name, rows)
    report.held_pending = int((status == HELD).sum())
    report.rejected = int((status == REJECTED).sum())
    report.accepted = int((status == ACCEPTED).sum())
    unchecked = rows[status.isna()]
    keep = rows[(status == ACCEPTED) | status.isna()]
    classes = sorted(set(base["label"]))
    if len(unchecked) < MIN_ROWS:
        report.skipped = f"{len(unchecked)} unchecked feedback rows: fewer than {MIN_ROWS}"
    else:
        sample = base.sample(n=min(len(base), settings.noise_base_rows), random_state=settings.seed)
        probs = out_of_fold_probabilities(
            recipe, sample, unchecked, classes, folds=settings.noise_folds, seed=settings.seed
        )
        flagged = find_noisy(
            unchecked["label"].tolist(),
            probs,
            classes,
            method=settings.noise_method,
            threshold=settings.noise_threshold,
        )
        report.checked, report.flagged = len(unchecked), int(flagged.sum())
        if report.flagged > settings.noise_max_fraction * report.checked:
            report.guard_tripped = True
            log.warning(
                "noise check flagged %d of %d feedback rows (more than %g): none held back",
                report.flagged,
                report.checked,
                settings.noise_max_fraction,
            )
        elif report.flagged:
            held = unchecked[flagged]
            report.held_ids = _hold(store, model_name, held, probs[flagged], classes, report)
            report.held_new = len(held)
            keep = keep.drop(index=held.index)
    report.seconds = time.perf_counter() - start
    return keep, report


def _hold(
    store: Store,
    model_name: str,
    held: pd.DataFrame,
    probs: npt.NDArray[np.float64],
    classes: Sequence[str],
    report: NoiseReport,
) -> list[int]:
    now = datetime.now(UTC)
    key_ids = held["key_id"] if "key_id" in held.columns else pd.Series(None, index=held.index)
    entries = []
    for (text, label, key_id), row in zip(
        zip(held["text"], held["label"], key_ids, strict=True), probs, strict=True
    ):
        best = int(row.argmax())
        entries.append(
            FeedbackReview(
                model_name=model_name,
                text_hash=text_hash(text),
                text=text,
                label=label,
                key_id=key_id,
                status=HELD,
                given_prob=round(float(row[classes.index(label)]), 6),
                suggested=classes[best],
                suggested_prob=round(float(row[best]), 6),
                method=report.method,
                held_at=now,
                reason="",
            )
        )
    with store.session() as session:
        session.add_all(entries)
        session.flush()
        return [e.id for e in entries]


def set_run(store: Store, ids: Sequence[int], run_id: str) -> None:
    """Name the retrain run that held back the review rows ``ids``."""
    if not ids:
        return
    with store.session() as session:
        session.execute(
            update(FeedbackReview).where(FeedbackReview.id.in_(list(ids))).values(run_id=run_id)
        )


def review_rows(
    store: Store, model_name: str, *, status: str | None = HELD
) -> list[dict[str, Any]]:
    """Review rows of ``model_name`` (only those with ``status``; None: all), oldest first."""
    query = select(FeedbackReview).where(FeedbackReview.model_name == model_name)
    if status is not None:
        query = query.where(FeedbackReview.status == status)
    with store.session() as session:
        found = session.execute(query.order_by(FeedbackReview.id)).scalars().all()
        return [_row(r) for r in found]


def _row(r: FeedbackReview) -> dict[str, Any]:
    return {
        "id": r.id,
        "text": r.text,
        "label": r.label,
        "key_id": r.key_id,
        "status": r.status,
        "given_prob": r.given_prob,
        "suggested": r.suggested,
        "suggested_prob": r.suggested_prob,
        "method": r.method,
        "run_id": r.run_id,
        "held_at": r.held_at.isoformat(),
        "decided_at": r.decided_at.isoformat() if r.decided_at else None,
        "decided_by": r.decided_by,
        "reason": r.reason,
    }


def decide(
    store: Store,
    ids: Sequence[int],
    decision: Decision,
    *,
    reason: str,
    actor: str,
    model_name: str,
) -> list[dict[str, Any]]:
    """Accept (trains next time) or reject (never trains) the held rows ``ids``, audited, all
    or none: ``NotFoundError`` for an id of no row of ``model_name``, ``ConflictError`` for one
    already decided, ``RequestError`` for no reason."""
    if not reason.strip():
        raise RequestError("--reason: required (say why, for the audit log)")
    if not ids:
        raise RequestError("review ids: give at least one (see `loopml feedback held`)")
    now = datetime.now(UTC)
    with store.session() as session:
        query = select(FeedbackReview).where(
            FeedbackReview.id.in_(list(ids)), FeedbackReview.model_name == model_name
        )
        found = {r.id: r for r in session.execute(query.with_for_update()).scalars()}
        missing = sorted(set(ids) - set(found))
        if missing:
            raise NotFoundError(f"review ids {missing}: no held feedback of model {model_name}")
        done = sorted(i for i, r in found.items() if r.status != HELD)
        if done:
            raise ConflictError(f"review ids {done}: already decided")
        for row in found.values():
            row.status, row.decided_at, row.decided_by, row.reason = decision, now, actor, reason
        store.audit(
            actor=actor,
            action=f"feedback_{'accept' if decision == ACCEPTED else 'reject'}",
            model_name=model_name,
            from_version=None,
            to_version=None,
            reason=reason,
            details={
                "review_ids": sorted(found),
                "labels": {str(i): r.label for i, r in sorted(found.items())},
            },
            session=session,
        )
        return [_row(found[i]) for i in sorted(found)]
