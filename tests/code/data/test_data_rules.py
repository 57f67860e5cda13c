"""Data 1 of the ML Test Score: the bounds on user data (longest text, smallest class, fewest
rows) refuse bad rows in ``loopml data validate`` and ``loopml train``, naming what and where."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from loopml.cli import app
from loopml.config import Settings
from loopml.data import DataRules, validate_frame
from loopml.errors import ValidationError

RULES = DataRules(max_text_chars=50, min_class_share=0.05, min_rows=20)


def frame(texts: list[str], labels: list[str]) -> pd.DataFrame:
    df = pd.DataFrame({"text": texts, "label": labels, "domain": "all"})
    df.index = pd.RangeIndex(1, len(df) + 1)
    return df


def balanced(n: int) -> tuple[list[str], list[str]]:
    return [f"tweet number {i}" for i in range(n)], ["pos" if i % 2 else "neg" for i in range(n)]


def problems(df: pd.DataFrame, rules: DataRules = RULES) -> list[str]:
    with pytest.raises(ValidationError) as info:
        validate_frame(df, source="f.csv", rules=rules)
    return info.value.problems


def test_rules_follow_the_settings(settings: Settings) -> None:
    rules = DataRules.from_settings(settings)
    assert rules == DataRules(max_text_chars=5000, min_class_share=0.01, min_rows=100)
    # The serving limit on predict texts is the same setting: training and serving agree.
    assert rules.max_text_chars == settings.max_text_chars


def test_a_balanced_frame_within_bounds_passes() -> None:
    df = frame(*balanced(40))
    assert validate_frame(df, source="f.csv", rules=RULES) is df


def test_long_texts_are_named_by_row() -> None:
    texts, labels = balanced(40)
    texts[6] = "x" * 51
    texts[30] = "y" * 500
    found = problems(frame(texts, labels))
    assert found == ["column 'text': text longer than 50 characters: 2 rows 7, 31"]


def test_a_rare_class_is_named_with_its_share() -> None:
    texts, labels = balanced(99)
    labels[4] = "rare"
    found = problems(frame(texts, labels))
    assert found == [
        "column 'label': class 'rare' has 1.01% of the rows (1 of 99); "
        "LOOPML_DATA_MIN_CLASS_SHARE is 5.00%"
    ]


def test_too_few_rows() -> None:
    found = problems(frame(*balanced(19)))
    assert found == ["too few rows: 19 (LOOPML_DATA_MIN_ROWS is 20)"]


def test_without_rules_the_bounds_do_not_apply() -> None:
    texts, labels = balanced(10)
    texts[0] = "z" * 10_000
    assert len(validate_frame(frame(texts, labels), source="f.csv")) == 10


def test_the_builtin_corpus_is_within_the_default_bounds(settings: Settings) -> None:
    from loopml.data import load_dataset

    rules = DataRules.from_settings(settings)
    data = load_dataset("builtin:tweets", rules=rules)
    shares = data.frame["label"].value_counts(normalize=True)
    assert shares.min() > 10 * rules.min_class_share
    assert data.frame["text"].str.len().max() < rules.max_text_chars


@pytest.mark.parametrize(
    ("env", "mutate", "message"),
    [
        ({"LOOPML_MAX_TEXT_CHARS": "60"}, "long", "column 'text': text longer than 60 characters"),
        ({}, "rare", "column 'label': class 'rare' has 0.50% of the rows (1 of 200)"),
        ({"LOOPML_DATA_MIN_ROWS": "500"}, None, "too few rows: 200 (LOOPML_DATA_MIN_ROWS is 500)"),
    ],
)
def test_validate_and_train_refuse_out_of_bounds_data(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    mutate: str | None,
    message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    texts, labels = balanced(200)
    if mutate == "long":
        texts[41] = "a long tweet " * 10
    elif mutate == "rare":
        labels[41] = "rare"
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    runner = CliRunner()
    for args in (["data", "validate", str(path)], ["train", "--data", str(path)]):
        result = runner.invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and str(path) in result.stderr
        assert "Traceback" not in result.stderr
        if mutate == "long":
            assert "row 42" in result.stderr
    models = runner.invoke(app, ["models", "--json"], catch_exceptions=False)
    assert json.loads(models.stdout) == []
