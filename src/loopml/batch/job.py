"""What a batch job is and what it writes: shared by the local and the Spark engine.

Output (Parquet under ``<output>/``, one row per scored input row): ``row_id`` (int64, the row's
0-based position across the input's files taken in sorted path order; both engines number rows
alike), ``id`` (the ``--id-column`` value as text, when given), ``label``, ``prob_<class>`` per
class, ``model_name``, ``model_version``, ``batch_id``; errors under ``<output>/errors/``; the job's
manifest (the BatchResult and the job) in ``<output>/_batch.json``. Rows that cannot be scored go
to the errors output (``row_id``, ``reason``) instead, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_TEXT_CHARS", "BatchJob", "BatchResult", "row_problem"]

# The serving API refuses longer texts (LOOPML_MAX_TEXT_CHARS); batch holds rows to the same rule.
MAX_TEXT_CHARS = 10_000


@dataclass(frozen=True, kw_only=True)
class BatchJob:
    """One scoring job: what to read, with which model, where to write."""

    input: str
    output: str
    model_name: str
    model_ref: str = "champion"
    text_column: str = "text"
    id_column: str | None = None
    batch_id: str
    max_text_chars: int = MAX_TEXT_CHARS
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class BatchResult:
    """What a finished job did."""

    batch_id: str
    model_name: str
    model_version: str
    rows_scored: int
    rows_failed: int
    seconds: float
    output: str
    errors_output: str | None


def row_problem(value: object, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    """Why one input value cannot be scored, or None when it can."""
    if value is None:
        return "missing text"
    if not isinstance(value, str):
        return f"not text: {type(value).__name__}"
    if not value.strip():
        return "empty text"
    if len(value) > max_chars:
        return f"text of {len(value)} characters is over the limit of {max_chars}"
    if "\ufffd" in value:
        return "text holds bytes that are not valid in its encoding"
    return None
