from __future__ import annotations

import pandas as pd
import pytest

from loopml.data.validate import validate_frame
from loopml.errors import ValidationError


def frame(texts: list[object], labels: list[object]) -> pd.DataFrame:
    df = pd.DataFrame({"text": texts, "label": labels, "domain": "all"})
    df.index = pd.RangeIndex(1, len(df) + 1)
    return df


def problems(df: pd.DataFrame, labels: list[str] | None = None) -> list[str]:
    with pytest.raises(ValidationError) as info:
        validate_frame(df, source="f.csv", labels=labels)
    assert str(info.value).startswith("f.csv:")
    return info.value.problems


def test_valid_frame_passes() -> None:
    df = frame(["good", "bad"], ["pos", "neg"])
    assert validate_frame(df, source="f.csv") is df


def test_empty_and_missing_text_name_rows() -> None:
    found = problems(frame(["ok", "   ", None, "fine"], ["a", "b", "a", "b"]))
    assert "column 'text': empty text: row 2" in found
    assert "column 'text': missing value: row 3" in found


def test_missing_and_unknown_labels() -> None:
    found = problems(frame(["a", "b", "c", "d"], ["pos", None, "wat", "neg"]), ["pos", "neg"])
    assert "column 'label': missing value: row 2" in found
    assert any(p.startswith("column 'label': unknown label") and p.endswith("row 3") for p in found)


def test_duplicates_report_the_repeats_not_the_first() -> None:
    found = problems(frame(["same", "other", "same", "same"], ["a", "b", "a", "b"]))
    assert (
        "column 'text': duplicate text (--drop-duplicates keeps one of each, with the majority"
        " label): 2 rows 3, 4" in found
    )


def test_fewer_than_two_classes() -> None:
    found = problems(frame(["a", "b"], ["pos", "pos"]))
    assert found == ["column 'label': fewer than two classes (found: pos)"]


def test_non_string_values_are_named() -> None:
    found = problems(frame(["a", 5], ["x", "y"]))
    assert found == ["column 'text': not a string (found number): row 2"]


def test_no_rows() -> None:
    assert problems(frame([], [])) == ["no data rows"]


def test_many_failures_are_summarised() -> None:
    found = problems(frame([""] * 8 + ["x", "y"], ["a"] * 5 + ["b"] * 5))
    assert "column 'text': empty text: 8 rows 1, 2, 3, 4, 5, ... (3 more)" in found
