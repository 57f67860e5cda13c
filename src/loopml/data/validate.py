"""Validation of labeled text data with pandera; each problem names the rule and example rows."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from loopml.errors import ValidationError

__all__ = ["validate_frame"]

_EXAMPLES = 5


def _not_blank(value: object) -> bool:
    # Non-strings are reported by the type check, not as empty text.
    return not isinstance(value, str) or bool(value.strip())


def _schema(labels: Sequence[str] | None) -> pa.DataFrameSchema:
    label_checks = [pa.Check.str_length(min_value=1, error="empty label")]
    if labels:
        label_checks.append(
            pa.Check.isin(list(labels), error=f"unknown label (allowed: {', '.join(labels)})")
        )
    return pa.DataFrameSchema(
        {
            "text": pa.Column(
                str,
                nullable=False,
                unique=True,
                checks=pa.Check(_not_blank, element_wise=True, error="empty text"),
                report_duplicates="exclude_first",
            ),
            "label": pa.Column(str, nullable=False, checks=label_checks),
            "domain": pa.Column(str, nullable=False),
        },
        strict=False,
        coerce=False,
    )


def _describe(column: str, check: str, rows: list[int]) -> str:
    check = check.replace("field_uniqueness", "duplicate text").replace(
        "not_nullable", "missing value"
    )
    if check.startswith("isin") or check.startswith("unknown label"):
        check = check if check.startswith("unknown") else "unknown label"
    shown = ", ".join(str(r) for r in rows[:_EXAMPLES])
    more = f", ... ({len(rows) - _EXAMPLES} more)" if len(rows) > _EXAMPLES else ""
    noun = "row" if len(rows) == 1 else f"{len(rows)} rows"
    return f"column {column!r}: {check}: {noun} {shown}{more}"


def _problems(failures: pd.DataFrame) -> list[str]:
    problems = []
    for (column, check), group in failures.groupby(["column", "check"], sort=False, dropna=False):
        rows = sorted({int(i) for i in group["index"].dropna()})
        problems.append(_describe(str(column), str(check), rows))
    return problems


def _type_problems(df: pd.DataFrame) -> list[str]:
    problems = []
    for column in ("text", "label"):
        series = df[column]
        bad = series[series.notna() & ~series.map(lambda v: isinstance(v, str))]
        if len(bad):
            rows = [int(i) for i in bad.index]
            problems.append(_describe(column, "not a string", rows))
    return problems


def validate_frame(
    df: pd.DataFrame, *, source: str, labels: Sequence[str] | None = None
) -> pd.DataFrame:
    """Check ``df`` (columns text, label, domain; index = row numbers) and return it.

    Raises :class:`ValidationError` listing every broken rule: missing or empty text, missing or
    unknown labels, duplicate texts, non-string values, fewer than two classes, no rows.
    """
    if df.empty:
        raise ValidationError(source, ["no data rows"])
    problems = _type_problems(df)
    try:
        _schema(labels).validate(df.astype({"text": object, "label": object}), lazy=True)
    except SchemaErrors as exc:
        failures = exc.failure_cases
        failures = failures[failures["check"] != "dtype('str')"]
        problems += _problems(failures)
    except SchemaError as exc:  # pragma: no cover - lazy=True reports SchemaErrors
        problems.append(str(exc))
    classes = df["label"].dropna().loc[lambda s: s.map(lambda v: isinstance(v, str) and v != "")]
    if classes.nunique() < 2:
        found = ", ".join(sorted(map(str, classes.unique()))) or "none"
        problems.append(f"column 'label': fewer than two classes (found: {found})")
    if problems:
        raise ValidationError(source, problems)
    return df
