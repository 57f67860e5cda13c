"""What the label queue hands out: shared by the queue, the Label Studio bridge and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["QueueItem"]


@dataclass(frozen=True, kw_only=True)
class QueueItem:
    """One logged, unlabelled prediction leased to a holder until ``lease_expires``."""

    request_id: str
    model_name: str
    model_version: str
    text: str
    label: str
    score: float
    probabilities: dict[str, float]
    priority: float
    strategy: str
    holder: str
    lease_expires: datetime
