from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from loopml.data import domain_of, read_source
from loopml.errors import DataSourceError, ValidationError


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("@united lost my bag again", "airline"),
        ("thanks @JetBlue for the upgrade", "airline"),
        ("The new iPhone battery is bad", "apple"),
        ("Google's self-driving car hit a bus", "cars"),
        ("driverless trucks are coming", "cars"),
        ("what a game last night", "other"),
    ],
)
def test_domain_of(text: str, domain: str) -> None:
    assert domain_of(text) == domain


def _write(path: Path, frame: pd.DataFrame) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_user_files_with_custom_columns(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"body": ["good", "bad", "meh"], "y": ["pos", "neg", "neu"]})
    path = _write(tmp_path / f"d{suffix}", frame)
    df = read_source(str(path), text_column="body", label_column="y")
    assert df["text"].tolist() == ["good", "bad", "meh"]
    assert df["label"].tolist() == ["pos", "neg", "neu"]
    assert df["domain"].tolist() == ["all"] * 3
    assert df.index.tolist() == [1, 2, 3], "index is the 1-based row number used in errors"


def test_missing_column_names_file_and_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "d.csv", pd.DataFrame({"txt": ["a"], "label": ["x"]}))
    with pytest.raises(ValidationError, match=r"(?s)d\.csv.*missing column 'text'.*txt, label"):
        read_source(str(path))


def test_undecodable_bytes_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nfine,a\nbro\xffken,b\n")
    with pytest.raises(ValidationError, match=r"row 2 \(file line 3.*not valid UTF-8"):
        read_source(str(path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.txt", "hello", "unsupported file type '.txt'"),
        ("x.jsonl", '{"text": "a"', "cannot parse jsonl"),
        ("x.csv", 'text,label\n"open,a\n', r"row 1 \(file line 2\) has 1 fields, the header has 2"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataSourceError, match=message):
        read_source(str(path))


def test_missing_file_and_unknown_builtin() -> None:
    with pytest.raises(DataSourceError, match="no such file"):
        read_source("nowhere.csv")
    with pytest.raises(DataSourceError, match="unknown built-in dataset"):
        read_source("builtin:imdb")
