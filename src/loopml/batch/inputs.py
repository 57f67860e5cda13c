"""Reading a batch's input: a file, a folder of files or an object-store prefix, in chunks.

Locations are local paths, ``file://``, ``s3://bucket/prefix`` or ``gs://bucket/prefix`` (through
``pyarrow.fs``, which ships S3 and GCS clients). Formats by file name: ``.csv``, ``.parquet`` /
``.pq``, ``.jsonl`` / ``.ndjson`` (optionally ``.gz``, ``.bz2`` or ``.zst`` compressed). A folder
or prefix is every such file under it (names starting with ``_`` or ``.`` skipped, as Spark does),
in sorted path order: rows are numbered 0.. across the files in that order.

Memory stays constant whatever the input's size: Parquet is read a record batch at a time, CSV
through Arrow's streaming reader in fixed blocks, JSONL a block of lines at a time. Text values are
read as bytes and decoded with replacement characters, so a bad encoding is one row's problem
(``row_problem``), never the whole file's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loopml.errors import DataError, DataSourceError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

__all__ = [
    "CHUNK_ROWS",
    "Chunk",
    "InputFile",
    "Location",
    "check_columns",
    "list_inputs",
    "parse_location",
    "read_chunks",
]

CHUNK_ROWS = 8192
_CSV_BLOCK = 16 << 20  # one CSV row may be up to this long (a 1 MB text fits)
_LINE_BLOCK = 1 << 20
_COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}
_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl"}
_FORMATS[".ndjson"] = "jsonl"


@dataclass(frozen=True)
class Location:
    """Where a batch's files are: a ``pyarrow.fs`` file system and a path inside it."""

    scheme: str  # "file", "s3" or "gs"
    path: str  # inside the file system: "/abs/path" or "bucket/prefix"

    def filesystem(self) -> pafs.FileSystem:
        """The file system (credentials from the usual environment: AWS_*, GOOGLE_*)."""
        import pyarrow.fs as pafs

        if self.scheme == "s3":
            return pafs.S3FileSystem()
        if self.scheme == "gs":
            return pafs.GcsFileSystem()
        return pafs.LocalFileSystem()

    def join(self, *parts: str) -> str:
        """A path under this location."""
        return "/".join([self.path.rstrip("/"), *parts])

    def uri(self, path: str | None = None) -> str:
        """``path`` (default: this location) as a URI-like name for messages."""
        path = self.path if path is None else path
        return path if self.scheme == "file" else f"{self.scheme}://{path}"


@dataclass(frozen=True)
class InputFile:
    """One file of the input and how to read it."""

    path: str
    format: str  # csv, parquet or jsonl
    compression: str | None
    size: int


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of the input: ``texts[i]`` is row ``start + i``."""

    start: int
    texts: list[object]
    ids: list[str | None] | None
    progress: int  # input bytes this chunk stands for (for the progress bar)


def parse_location(uri: str) -> Location:
    """A location from a path or URL; no network is touched."""
    from pathlib import Path

    scheme, sep, rest = uri.partition("://")
    if not sep:
        return Location("file", str(Path(uri).expanduser().absolute()))
    scheme = scheme.lower()
    if scheme == "file":
        return Location("file", str(Path(rest).absolute()))
    if scheme in ("s3", "s3a", "gs", "gcs"):
        if not rest.strip("/"):
            raise DataSourceError(f"{uri}: no bucket named")
        return Location("s3" if scheme.startswith("s3") else "gs", rest.rstrip("/"))
    raise DataSourceError(f"{uri}: unsupported scheme {scheme}:// (local paths, s3://, gs://)")


def _format_of(name: str) -> tuple[str, str | None] | None:
    lower = name.lower()
    compression = None
    for ext, codec in _COMPRESSED.items():
        if lower.endswith(ext):
            compression, lower = codec, lower[: -len(ext)]
    for ext, fmt in _FORMATS.items():
        if lower.endswith(ext):
            return fmt, compression
    return None


def list_inputs(location: Location, fs: pafs.FileSystem) -> list[InputFile]:
    """The input's files in sorted path order; DataSourceError when there are none."""
    import pyarrow.fs as pafs

    try:
        info = fs.get_file_info(location.path)
        if info.type == pafs.FileType.File:
            infos = [info]
        elif info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(location.path, recursive=True))
        else:
            raise DataSourceError(f"input {location.uri()} does not exist")
    except OSError as exc:
        raise DataSourceError(f"cannot list input {location.uri()}: {exc}") from exc
    files = []
    for item in infos:
        if item.type != pafs.FileType.File or item.base_name.startswith(("_", ".")):
            continue
        found = _format_of(item.base_name)
        if found is None:
            if len(infos) == 1:
                raise DataSourceError(
                    f"input {location.uri(item.path)}: unknown format"
                    " (expected .csv, .parquet, .pq, .jsonl or .ndjson)"
                )
            continue
        files.append(InputFile(item.path, found[0], found[1], item.size or 0))
    if not files:
        raise DataSourceError(f"input {location.uri()} holds no .csv, .parquet or .jsonl file")
    return sorted(files, key=lambda f: f.path)


def _missing(column: str, present: list[str], where: str) -> DataError:
    return DataError(f"{where}: no column {column!r}; columns present: {', '.join(present)}")


def _columns_of(fs: pafs.FileSystem, file: InputFile) -> list[str]:
    """Column names of one file (the first object's keys for JSONL)."""
    import pyarrow.parquet as pq

    if file.format == "parquet":
        with fs.open_input_file(file.path) as handle:
            return list(pq.ParquetFile(handle).schema_arrow.names)
    if file.format == "csv":
        import pyarrow.csv as pcsv

        with fs.open_input_stream(file.path, compression=file.compression) as stream:
            reader = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=_CSV_BLOCK))
            return list(reader.schema.names)
    for line in _lines(fs, file):
        if line.strip():
            obj = _json(line)
            return list(obj) if isinstance(obj, dict) else []
    return []


def check_columns(
    fs: pafs.FileSystem, files: list[InputFile], text_column: str, id_column: str | None
) -> None:
    """DataError (exit 2) naming a missing column and the columns present, per file."""
    for file in files:
        try:
            present = _columns_of(fs, file)
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"cannot read {file.path}: {exc}") from exc
        for column in (text_column, id_column):
            if column is not None and column not in present:
                raise _missing(column, present, file.path)


def _decode(values: list[Any]) -> list[object]:
    return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in values]


def _as_text(array: pa.Array | pa.ChunkedArray) -> list[object]:
    """Python values of a column; strings through bytes (bad UTF-8 becomes U+FFFD)."""
    import pyarrow as pa

    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        array = array.cast(pa.large_binary())
    return _decode(array.to_pylist())


def _ids(values: list[object]) -> list[str | None]:
    return [None if v is None else str(v) for v in values]


def _parquet_chunks(
    fs: pafs.FileSystem, file: InputFile, text: str, id_col: str | None, start: int
) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    columns = [text] if id_col is None or id_col == text else [text, id_col]
    with fs.open_input_file(file.path) as handle:
        parquet = pq.ParquetFile(handle)
        rows = max(parquet.metadata.num_rows, 1)
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            texts = _as_text(batch.column(text))
            ids = _ids(_as_text(batch.column(id_col))) if id_col else None
            yield Chunk(start, texts, ids, file.size * len(texts) // rows)
            start += len(texts)


def _csv_chunks(
    fs: pafs.FileSystem, file: InputFile, text: str, id_col: str | None, start: int
) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    columns = [text] if id_col is None or id_col == text else [text, id_col]
    convert = pcsv.ConvertOptions(
        include_columns=columns,
        column_types=dict.fromkeys(columns, pa.binary()),
        strings_can_be_null=False,
    )
    read = pcsv.ReadOptions(block_size=_CSV_BLOCK, use_threads=False)
    parse = pcsv.ParseOptions(newlines_in_values=True)
    seekable = file.compression is None  # its position says how far the reader is
    opened = (
        fs.open_input_file(file.path)
        if seekable
        else fs.open_input_stream(file.path, compression=file.compression)
    )
    with opened as stream:
        reader = pcsv.open_csv(
            stream, read_options=read, parse_options=parse, convert_options=convert
        )
        done = 0
        try:
            for batch in reader:
                for offset in range(0, batch.num_rows, CHUNK_ROWS):
                    part = batch.slice(offset, CHUNK_ROWS)
                    texts = _as_text(part.column(text))
                    ids = _ids(_as_text(part.column(id_col))) if id_col else None
                    at = min(stream.tell(), file.size) if seekable else done
                    yield Chunk(start, texts, ids, max(at - done, 0))
                    done = max(done, at)
                    start += len(texts)
        except pa.ArrowInvalid as exc:
            raise DataError(f"{file.path}: not readable as CSV after row {start}: {exc}") from exc


def _lines(fs: pafs.FileSystem, file: InputFile) -> Iterator[bytes]:
    """The file's lines (without their end), read a block at a time."""
    with fs.open_input_stream(file.path, compression=file.compression) as stream:
        rest = b""
        while block := stream.read(_LINE_BLOCK):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            yield from lines
        if rest:
            yield rest


class _BadLine:
    """A JSONL line that is not a JSON object (its row goes to the errors output)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _json(line: bytes) -> object:
    try:
        return json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return _BadLine("line is not valid JSON")


def _jsonl_chunks(
    fs: pafs.FileSystem, file: InputFile, text: str, id_col: str | None, start: int
) -> Iterator[Chunk]:
    texts: list[object] = []
    ids: list[str | None] = []
    size = 0
    for line in _lines(fs, file):
        size += len(line) + 1
        if not line.strip():
            continue  # blank lines are not rows
        obj = _json(line)
        if isinstance(obj, dict):
            texts.append(obj.get(text))
            ids.append(None if id_col is None or obj.get(id_col) is None else str(obj[id_col]))
        else:
            texts.append(obj if isinstance(obj, _BadLine) else _BadLine("line is not an object"))
            ids.append(None)
        if len(texts) == CHUNK_ROWS:
            yield Chunk(start, texts, ids if id_col else None, size)
            start, texts, ids, size = start + len(texts), [], [], 0
    if texts:
        yield Chunk(start, texts, ids if id_col else None, size)


_READERS = {"parquet": _parquet_chunks, "csv": _csv_chunks, "jsonl": _jsonl_chunks}


def read_chunks(
    fs: pafs.FileSystem, files: list[InputFile], text_column: str, id_column: str | None
) -> Iterator[Chunk]:
    """Every row of ``files`` in order, a chunk at a time; DataError when a file is unreadable."""
    start = 0
    for file in files:
        try:
            for chunk in _READERS[file.format](fs, file, text_column, id_column, start):
                start = chunk.start + len(chunk.texts)
                yield chunk
        except OSError as exc:
            raise DataSourceError(f"cannot read {file.path}: {exc}") from exc
        except KeyError as exc:  # a column missing from a record batch
            raise DataError(f"{file.path}: no column {exc}") from exc


def problem_of(value: object, max_chars: int) -> str | None:
    """Why a value read by this module cannot be scored (a bad JSONL line, or row_problem)."""
    from loopml.batch.job import row_problem

    if isinstance(value, _BadLine):
        return value.reason
    return row_problem(value, max_chars)
