"""Validation of labeled text data with pandera; each problem names the rule and example rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

from loopml.config import Settings, setting, settings_of
from loopml.errors import ValidationError

__all__ = ["DataRules", "drop_duplicates", "validate_frame"]

_EXAMPLES = 5


def _not_blank(value: object) -> bool:
    # Non-strings are reported by the type check, not as empty text.
    return not isinstance(value, str) or bool(value.strip())


#: Serving refuses NUL in a text or label (PostgreSQL text cannot hold it): training does too, so
#: no model learns from what it could never be asked or told.
_NO_NUL = pa.Check(
    lambda value: not isinstance(value, str) or "\x00" not in value,
    element_wise=True,
    error="contains NUL (\\u0000), which serving refuses",
)


@dataclass(frozen=True)
class DataRules:
    """Bounds on user data beyond the basic rules: longest text, smallest class, fewest rows."""

    # LOOPML_MAX_TEXT_CHARS is serving's too: nothing is trained on texts the server would refuse
    max_text_chars: int = setting("max_text_chars")
    min_class_share: float = setting("data_min_class_share")
    min_rows: int = setting("data_min_rows")
    drop_duplicates: bool = setting("data_drop_duplicates", False)  # repeated texts kept once

    @classmethod
    def from_settings(cls, settings: Settings) -> DataRules:
        """The bounds of ``LOOPML_MAX_TEXT_CHARS``, ``LOOPML_DATA_MIN_CLASS_SHARE`` and
        ``LOOPML_DATA_MIN_ROWS``, and ``LOOPML_DATA_DROP_DUPLICATES``."""
        return settings_of(cls, settings)


def _not_too_long(limit: int) -> pa.Check:
    def fits(value: object) -> bool:
        return not isinstance(value, str) or len(value) <= limit

    return pa.Check(fits, element_wise=True, error=f"text longer than {limit} characters")


def _schema(labels: Sequence[str] | None, rules: DataRules | None) -> pa.DataFrameSchema:
    label_checks = [pa.Check.str_length(min_value=1, error="empty label"), _NO_NUL]
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
                checks=[
                    pa.Check(_not_blank, element_wise=True, error="empty text"),
                    _NO_NUL,
                    *([_not_too_long(rules.max_text_chars)] if rules else []),
                ],
                report_duplicates="exclude_first",
            ),
            "label": pa.Column(str, nullable=False, checks=label_checks),
            "domain": pa.Column(str, nullable=False),
        },
        strict=False,
        coerce=False,
    )


def _describe(column: str, check: str, rows: list[int]) -> str:
    check = check.replace(
        "field_uniqueness",
        "duplicate text (--drop-duplicates keeps one of each, with the majority label)",
    ).replace("not_nullable", "missing value")
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


#: JSON's names for what pandas reads (a Parquet list arrives as a NumPy array)
_TYPE_NAMES = {"dict": "object", "ndarray": "list", "float": "number", "int": "number"}


def _not_strings(series: pd.Series) -> pd.Series:
    """Which values are present but not strings (numbers, objects, lists, bytes)."""
    return series.notna() & ~series.map(lambda v: isinstance(v, str))


def _type_problems(df: pd.DataFrame) -> list[str]:
    problems = []
    for column in ("text", "label"):
        bad = df[column][_not_strings(df[column])]
        if len(bad):
            rows = [int(i) for i in bad.index]
            found = sorted({_TYPE_NAMES.get(type(v).__name__, type(v).__name__) for v in bad})
            problems.append(_describe(column, f"not a string (found {', '.join(found)})", rows))
    return problems


def _bound_problems(classes: pd.Series, rows: int, rules: DataRules) -> list[str]:
    problems = []
    if rows < rules.min_rows:
        problems.append(f"too few rows: {rows} (LOOPML_DATA_MIN_ROWS is {rules.min_rows})")
    shares = classes.value_counts() / max(rows, 1)
    for label, share in shares[shares < rules.min_class_share].items():
        problems.append(
            f"column 'label': class {label!r} has {share:.2%} of the rows "
            f"({int(share * rows)} of {rows}); LOOPML_DATA_MIN_CLASS_SHARE is "
            f"{rules.min_class_share:.2%}"
        )
    return problems


def validate_frame(
    df: pd.DataFrame,
    *,
    source: str,
    labels: Sequence[str] | None = None,
    rules: DataRules | None = None,
) -> pd.DataFrame:
    """Check ``df`` (columns text, label, domain; index = row numbers) and return it.

    Raises :class:`ValidationError` listing every broken rule: missing or empty text, missing or
    unknown labels, duplicate texts, non-string values, fewer than two classes, no rows; with
    ``rules``, also texts that are too long, too few rows and classes below their minimum share.
    """
    if df.empty:
        raise ValidationError(source, ["no data rows"])
    problems = _type_problems(df)
    # The other rules see only rows whose values are strings (or missing): an object or a list
    # cannot be hashed for the duplicate check, and its row is reported above already.
    typed = df[~_not_strings(df["text"]) & ~_not_strings(df["label"])]
    try:
        _schema(labels, rules).validate(typed.astype({"text": object, "label": object}), lazy=True)
    except SchemaErrors as exc:
        failures = exc.failure_cases
        failures = failures[failures["check"] != "dtype('str')"]
        problems += _problems(failures)
    except SchemaError as exc:  # pragma: no cover - lazy=True reports SchemaErrors
        problems.append(str(exc))
    classes = df["label"].dropna().loc[lambda s: s.map(lambda v: isinstance(v, str) and v != "")]
    if classes.nunique() < 2 and not _not_strings(df["label"]).any():
        found = ", ".join(sorted(map(str, classes.unique()))) or "none"
        problems.append(f"column 'label': fewer than two classes (found: {found})")
    if rules is not None:
        problems += _bound_problems(classes, len(df), rules)
    if problems:
        raise ValidationError(source, problems)
    return df


def drop_duplicates(df: pd.DataFrame, *, source: str) -> tuple[pd.DataFrame, list[str]]:
    """``df`` with each repeated text kept once (its first row), and what was done, in words.

    Where the repeats disagree on the label, the row kept carries the label most of them give;
    a tie has no majority, so those rows are refused (a :class:`ValidationError` naming them)
    rather than guessed.
    """
    texts = df["text"].map(lambda v: v if isinstance(v, str) else None)
    repeated = df[texts.notna() & texts.duplicated(keep=False)]
    if repeated.empty:
        return df, []
    keep, ties, relabelled = [], [], 0
    for _, group in repeated.groupby("text", sort=False):
        counts = group["label"].astype(str).value_counts()
        first = group.index[0]
        if len(counts) > 1 and counts.iloc[0] == counts.iloc[1]:
            votes = ", ".join(f"{label} x{n}" for label, n in counts.items())
            rows = ", ".join(str(i) for i in group.index[:_EXAMPLES])
            ties.append(
                f"column 'label': repeated text with no majority label ({votes}): rows {rows}"
            )
            continue
        relabelled += int(df.at[first, "label"] != counts.index[0])
        keep.append((first, counts.index[0]))
    if ties:
        raise ValidationError(source, ties)
    out = df.drop(index=repeated.index.difference([i for i, _ in keep]))
    for index, label in keep:
        out.at[index, "label"] = label
    dropped = len(df) - len(out)
    notes = [f"dropped {dropped} repeated rows of {len(keep)} texts (each kept once, first row)"]
    if relabelled:
        notes.append(f"{relabelled} kept rows took their repeats' majority label")
    return out, notes
