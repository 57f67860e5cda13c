"""A user's own dataset through loopml: repeated texts refused with a way forward
(`--drop-duplicates`: each text once, the majority label where repeats disagree, a tie refused
with its rows), and a model of its own name (`loopml --model NAME ...`) beside the default one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from loopml.cli import app
from loopml.data import Dataset
from loopml.data.validate import drop_duplicates
from loopml.errors import ValidationError

runner = CliRunner()


def _frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["text", "label"]).assign(domain="all")
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame


def test_repeats_are_kept_once_with_the_majority_label_and_a_tie_is_refused() -> None:
    frame = _frame(
        [
            ("a", "x"),
            ("b", "x"),
            ("a", "x"),  # same label: dropped
            ("c", "y"),
            ("c", "x"),
            ("c", "x"),  # 2 x against 1 y: the kept row (row 4) takes x
            ("d", "y"),
        ]
    )
    kept, notes = drop_duplicates(frame, source="f.csv")
    assert kept["text"].tolist() == ["a", "b", "c", "d"]
    assert kept.index.tolist() == [1, 2, 4, 7]  # row numbers kept for later messages
    assert kept.loc[4, "label"] == "x"
    assert notes == [
        "dropped 3 repeated rows of 2 texts (each kept once, first row)",
        "1 kept rows took their repeats' majority label",
    ]
    tie = _frame([("a", "x"), ("b", "y"), ("a", "y"), ("b", "y")])
    with pytest.raises(ValidationError, match=r"no majority label \(x x1, y x1\): rows 1, 3"):
        drop_duplicates(tie, source="f.csv")
    assert drop_duplicates(frame.drop_duplicates("text"), source="f.csv")[1] == []


def _topics(tweets: Dataset, path: Path) -> Path:
    """A user's own 4-class topic dataset: real tweets labelled by their domain, with repeats."""
    frame = tweets.frame.groupby("domain").sample(700, random_state=0)
    frame = frame[["text"]].assign(topic=tweets.frame.loc[frame.index, "domain"])
    repeats = frame.head(3).assign(topic=frame["topic"].head(3))
    pd.concat([frame, repeats]).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_a_users_topic_csv_trains_as_its_own_model_after_dropping_repeats(
    tweets: Dataset, home: Path, tmp_path: Path
) -> None:
    data = str(_topics(tweets, tmp_path / "topics.csv"))
    refused = runner.invoke(app, ["data", "validate", data, "--label-column", "topic"])
    assert refused.exit_code == 2
    assert "duplicate text (--drop-duplicates keeps one of each" in refused.output
    assert "3 rows 2801, 2802, 2803" in refused.output

    ok = runner.invoke(
        app, ["data", "validate", data, "--label-column", "topic", "--drop-duplicates", "--json"]
    )
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout)
    assert summary["rows"] == 2800 and summary["notes"][0].startswith("dropped 3 repeated rows")

    env = {"LOOPML_LABEL_COLUMN": "topic", "LOOPML_GATE_BASELINE_MARGIN": "-0.05"}
    trained = runner.invoke(
        app,
        ["--model", "topic", "train", "--data", data, "--drop-duplicates", "--promote", "--json"],
        env=env,
    )
    assert trained.exit_code == 0, trained.output
    result = json.loads(trained.stdout)
    assert result["data_notes"][0].startswith("dropped 3 repeated rows")
    assert set(result["metrics"]) >= {f"f1_{t}" for t in ("airline", "apple", "cars", "other")}
    assert result["metrics"]["macro_f1"] > 0.6

    models = runner.invoke(app, ["--model", "topic", "models", "--json"])
    assert models.exit_code == 0, models.output
    assert [v["version"] for v in json.loads(models.stdout)] == ["1"]
    other = runner.invoke(app, ["models", "--json"])  # the default model has none
    assert other.exit_code == 0 and json.loads(other.stdout) == []

    bad = runner.invoke(app, ["--model", "no such/model", "models"])
    assert bad.exit_code == 2 and "--model" in bad.output
