"""Tables of the loopml database (SQLAlchemy 2.0 declarative). Schema changes go through Alembic."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loopml.store.types import UtcDateTime

__all__ = [
    "PREDICTION_COLUMNS",
    "AuditEntry",
    "Base",
    "ControllerLease",
    "Feedback",
    "FeedbackReview",
    "LabelAnnotation",
    "LabelItem",
    "LabelLease",
    "ModelArtifact",
    "MonitorResult",
    "Prediction",
    "RoutingState",
    "ServingError",
]


class Base(DeclarativeBase):
    """Declarative base of every loopml table."""


class AuditEntry(Base):
    """One decision that changed what serves: alias moves, rollouts, rollbacks."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    from_version: Mapped[str | None] = mapped_column(String(50))
    to_version: Mapped[str | None] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Prediction(Base):
    """One answered prediction, written by serving off the request path."""

    __tablename__ = "predictions"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(50), index=True)
    variant: Mapped[str] = mapped_column(String(20))
    text: Mapped[str | None] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    text_length: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(100))
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)


class Feedback(Base):
    """Delayed ground truth for a prediction, joined to it by request id, with who gave it.

    A label is given once; only an audited admin relabel changes it (``key_id`` then names the
    admin). ``key_id`` is None for labels stored before provenance was recorded.
    """

    __tablename__ = "feedback"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    label: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)


class RoutingState(Base):
    """Who serves: champion, optional challenger, mode and canary weight (one row per model)."""

    __tablename__ = "routing_state"

    model_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    champion_version: Mapped[str | None] = mapped_column(String(50))
    challenger_version: Mapped[str | None] = mapped_column(String(50))
    mode: Mapped[str] = mapped_column(String(20), default="none")
    weight: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ServingError(Base):
    """Failed model calls of one variant (a batch at a time), for rollout analysis."""

    __tablename__ = "serving_errors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(50))
    variant: Mapped[str] = mapped_column(String(20))
    errors: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)


class MonitorResult(Base):
    """Summary of one monitoring run."""

    __tablename__ = "monitor_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(50))
    window_size: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(30))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    report_path: Mapped[str | None] = mapped_column(Text)


class ModelArtifact(Base):
    """SHA-256 and size of one file of a registered model version, recorded at registration."""

    __tablename__ = "model_artifacts"

    model_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(50), primary_key=True)
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime())


class ControllerLease(Base):
    """Which controller may act on a model now: one row per model, taken over only once it expired.

    ``generation`` grows by one at every takeover: a holder acts only while the row still carries
    its generation (fencing), so a controller that hung past its expiry cannot act after another
    took over. ``step`` names the step in progress (``retrain``, ``monitor``): a holder that dies
    leaves it behind for the next one to recover.
    """

    __tablename__ = "controller_lease"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    generation: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[datetime] = mapped_column(UtcDateTime())
    renewed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    step: Mapped[str | None] = mapped_column(String(50), default=None)
    step_started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)


class LabelItem(Base):
    """One prediction sent to an annotation tool (a Label Studio task) and where its label stands.

    ``status``: ``pushed`` (no annotation yet), ``waiting`` (fewer annotations than required),
    ``agreed`` (stored as feedback), ``disagreed`` (held until someone decides), ``decided``
    (a decision stored as feedback). ``agreement`` is the share of annotations that give the
    most given label.
    """

    __tablename__ = "label_items"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    project_id: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), index=True)
    label: Mapped[str | None] = mapped_column(String(100), default=None)
    agreement: Mapped[float | None] = mapped_column(Float, default=None)
    annotations: Mapped[int] = mapped_column(Integer, default=0)
    decided_by: Mapped[str | None] = mapped_column(String(200), default=None)
    pushed_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class LabelAnnotation(Base):
    """One annotator's label for a prediction, as the annotation tool last reported it."""

    __tablename__ = "label_annotations"

    source: Mapped[str] = mapped_column(String(20), primary_key=True)
    annotation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    annotator: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100))
    ts: Mapped[datetime] = mapped_column(UtcDateTime())


class LabelLease(Base):
    """A logged prediction handed to an annotator by the label queue, until ``expires_at``.

    One row per prediction: while it has not expired and the prediction has no feedback, no one
    else gets the item. An expired row returns the item to the queue; a label (a ``feedback`` row)
    ends it. The queue deletes rows that ended either way.
    """

    __tablename__ = "label_leases"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    holder: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(30))
    priority: Mapped[float] = mapped_column(Float)
    leased_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class FeedbackReview(Base):
    """A feedback label held back from retraining as likely wrong, and a reviewer's decision.

    One row per (model, text, label): ``held`` until decided; an ``accepted`` label trains again
    (and is not checked again), a ``rejected`` one never trains. A relabelled text is a new label
    and is checked afresh. Written by :mod:`loopml.labels.noise`.
    """

    __tablename__ = "feedback_review"
    __table_args__ = (UniqueConstraint("model_name", "text_hash", "label"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(200))
    text_hash: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[str] = mapped_column(String(20), index=True)
    given_prob: Mapped[float] = mapped_column(Float)
    suggested: Mapped[str] = mapped_column(String(100))
    suggested_prob: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(50))
    run_id: Mapped[str | None] = mapped_column(String(64), default=None)
    held_at: Mapped[datetime] = mapped_column(UtcDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), default=None)
    decided_by: Mapped[str | None] = mapped_column(String(200), default=None)
    reason: Mapped[str] = mapped_column(Text, default="")


PREDICTION_COLUMNS: tuple[str, ...] = tuple(c.name for c in Prediction.__table__.columns)
"""Every column of ``predictions`` in table order: the fields of one prediction-log record."""

Index("ix_predictions_version_ts", Prediction.model_version, Prediction.ts)
Index("ix_serving_errors_version_ts", ServingError.model_version, ServingError.ts)
