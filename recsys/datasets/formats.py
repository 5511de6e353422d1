"""Readers for MovieLens' native rating formats, all producing one schema.

=================  ============  ======  ===========================================
format             separator     header  used by
=================  ============  ======  ===========================================
``u.data``         tab           no      ml-100k
``ratings.dat``    ``::``        no      ml-1m, ml-10m
``ratings.csv``    ``,``         yes     ml-latest-small, ml-20m, ml-25m, ml-32m,
                                         the synthetic generator
``recbole-inter``  tab           yes     RecBole atomic files (the embedded ml-100k)
=================  ============  ======  ===========================================

Every reader returns a pandas DataFrame with columns ``user_id`` (int64), ``item_id``
(int64), ``rating`` (float64) and ``timestamp`` (int64 seconds since the epoch). A
malformed line raises :class:`RatingsFormatError` naming the file, the 1-based line
number and the field. (The Spark ingest job quarantines such lines instead of raising;
it shares :data:`FORMATS` so both agree on what a line looks like.)
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from recsys.schema import ITEM_COL, RATING_COL, RATINGS_COLUMNS, TIMESTAMP_COL, USER_COL


@dataclass(frozen=True)
class RatingsFormat:
    """How one native ratings file lays out its fields."""

    name: str
    separator: str
    header: tuple[str, ...] | None

    @property
    def n_header_lines(self) -> int:
        return 0 if self.header is None else 1


FORMATS: dict[str, RatingsFormat] = {
    "u.data": RatingsFormat("u.data", "\t", None),
    "ratings.dat": RatingsFormat("ratings.dat", "::", None),
    "ratings.csv": RatingsFormat("ratings.csv", ",", ("userId", "movieId", "rating", "timestamp")),
    "recbole-inter": RatingsFormat(
        "recbole-inter", "\t", ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
    ),
}

_FIELD_PARSERS = {
    USER_COL: lambda text: _id(text),
    ITEM_COL: lambda text: _id(text),
    RATING_COL: float,
    TIMESTAMP_COL: lambda text: _integral(float(text)),
}
_ARROW_TYPES = {
    USER_COL: pa.int64(),
    ITEM_COL: pa.int64(),
    RATING_COL: pa.float64(),
    TIMESTAMP_COL: pa.float64(),
}


class RatingsFormatError(ValueError):
    """A ratings file has a line that does not match its format."""

    def __init__(self, path: Path | str, line: int, field: str, reason: str) -> None:
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        super().__init__(f"{path}:{line}: field {field!r}: {reason}")


#: Leading bytes of the compressed and archive files a feed may drop under a plain-text name.
COMPRESSION_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"PK\x03\x04": "zip",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"\xfd7zXZ\x00": "xz",
}
MAGIC_BYTES = max(len(magic) for magic in COMPRESSION_MAGIC)


def compression_of(head: bytes) -> str | None:
    """The compression a file starting with ``head`` (its first :data:`MAGIC_BYTES` bytes) looks
    like, or None for what may be text."""
    return next((kind for magic, kind in COMPRESSION_MAGIC.items() if head.startswith(magic)), None)


def compressed_file_error(path: str, head: bytes) -> str | None:
    """What is wrong with a ratings file starting with ``head`` that looks compressed, else None."""
    kind = compression_of(head)
    if kind is None:
        return None
    magic = next(m for m, k in COMPRESSION_MAGIC.items() if k == kind)
    return (
        f"{path}: looks {kind}-compressed (it starts with the bytes {magic.hex(' ')}), but a ratings "
        "file must be plain text; decompress it and land the text file"
    )


def format_for(path: Path | str) -> RatingsFormat:
    """Guess the format from a file name (``u.data``, ``*.dat``, ``*.csv``, ``*.inter``)."""
    name = Path(path).name
    if name == "u.data":
        return FORMATS["u.data"]
    if name.endswith(".dat"):
        return FORMATS["ratings.dat"]
    if name.endswith(".csv"):
        return FORMATS["ratings.csv"]
    if name.endswith(".inter"):
        return FORMATS["recbole-inter"]
    raise ValueError(
        f"{path}: cannot tell the ratings format from the file name; pass one of {sorted(FORMATS)}"
    )


#: Ids are signed 64-bit; timestamps whole seconds within a double's exact integers (ingest agrees).
_MAX_ID = 2**63 - 1
MAX_ABS_SECONDS = 2**53


def _id(text: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError("not an integer")
    value = int(text)
    if not -_MAX_ID - 1 <= value <= _MAX_ID:
        raise ValueError("out of the signed 64-bit range")
    return value


def _integral(value: float) -> int:
    if not math.isfinite(value) or value != int(value) or abs(value) >= MAX_ABS_SECONDS:
        raise ValueError(f"{value!r} is not a whole number of seconds")
    return int(value)


def parse_line(text: str, fmt: RatingsFormat, path: Path | str, line: int) -> tuple[int, int, float, int]:
    """Parse one data line strictly, or raise :class:`RatingsFormatError`."""
    fields = text.rstrip("\r\n").split(fmt.separator)
    if len(fields) != len(RATINGS_COLUMNS):
        raise RatingsFormatError(
            path,
            line,
            "<line>",
            f"expected {len(RATINGS_COLUMNS)} fields separated by {fmt.separator!r}, got {len(fields)}",
        )
    parsed = []
    for column, raw in zip(RATINGS_COLUMNS, fields, strict=True):
        try:
            value = _FIELD_PARSERS[column](raw.strip())
        except ValueError as exc:
            raise RatingsFormatError(path, line, column, f"cannot parse {raw!r}: {exc}") from None
        if column == RATING_COL and not math.isfinite(value):
            raise RatingsFormatError(path, line, column, f"{raw!r} is not a finite number")
        parsed.append(value)
    return parsed[0], parsed[1], parsed[2], parsed[3]


def _check_header(first: str, fmt: RatingsFormat, path: Path | str) -> None:
    found = tuple(field.strip() for field in first.rstrip("\r\n").split(fmt.separator))
    if found != fmt.header:
        raise RatingsFormatError(
            path,
            1,
            "<header>",
            f"expected header {fmt.separator.join(fmt.header or ())!r}, got {first.strip()!r}",
        )


def _locate_error(path: Path, fmt: RatingsFormat) -> RatingsFormatError | None:
    """Scan line by line to name the first bad line (the slow path, only after a failure).

    Each line is decoded on its own, so a line that is not UTF-8 is named at its place, after
    any earlier bad line (a decoder over the whole file would fail at the first bad block).
    """
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return RatingsFormatError(path, number, "<line>", f"not valid UTF-8: {exc.reason}")
            try:
                if number <= fmt.n_header_lines:
                    _check_header(text, fmt, path)
                else:
                    parse_line(text, fmt, path, number)
            except RatingsFormatError as exc:
                return exc
    return None


def _separator_normalised(path: Path, fmt: RatingsFormat, block_lines: int = 1 << 16) -> Iterator[bytes]:
    """Stream the file with a multi-character separator rewritten as a tab."""
    sep = fmt.separator.encode()
    with path.open("rb") as handle:
        while True:
            lines = handle.readlines(block_lines * 32)
            if not lines:
                return
            yield b"".join(lines).replace(sep, b"\t")


class _IterStream(io.RawIOBase):
    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buffer = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size], self._buffer = self._buffer[:size], self._buffer[size:]
        return size


def read_ratings(path: Path | str, fmt: RatingsFormat | str | None = None) -> pd.DataFrame:
    """Read one ratings file into the one schema, strictly.

    The fast path is Arrow's multi-threaded CSV reader; when it rejects the file, a
    line-by-line scan names the first bad line, field and reason.
    """
    path = Path(path)
    if fmt is None:
        fmt = format_for(path)
    elif isinstance(fmt, str):
        fmt = FORMATS[fmt]
    with path.open("rb") as handle:
        problem = compressed_file_error(str(path), handle.read(MAGIC_BYTES))
    if problem is not None:
        raise ValueError(problem)
    multi_char = len(fmt.separator) > 1
    source = (
        pa.PythonFile(_IterStream(_separator_normalised(path, fmt)), mode="r") if multi_char else str(path)
    )
    try:
        table = pacsv.read_csv(
            source,
            read_options=pacsv.ReadOptions(
                column_names=list(RATINGS_COLUMNS), skip_rows=fmt.n_header_lines, encoding="utf8"
            ),
            # an empty line is a malformed line (as ingest quarantines it), not one to skip
            parse_options=pacsv.ParseOptions(
                delimiter="\t" if multi_char else fmt.separator, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(column_types=_ARROW_TYPES, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        error = _locate_error(path, fmt)
        if error is not None:
            raise error from None
        raise
    if fmt.header is not None:
        with path.open(encoding="utf-8", newline="") as handle:
            _check_header(handle.readline(), fmt, path)
    frame = table.to_pandas()
    if frame.isna().any().any():
        raise _locate_error(path, fmt) or ValueError(f"{path}: empty fields")
    timestamps = frame[TIMESTAMP_COL].to_numpy()
    if (timestamps != timestamps.round()).any():
        raise _locate_error(path, fmt) or ValueError(f"{path}: fractional timestamps")
    frame[TIMESTAMP_COL] = frame[TIMESTAMP_COL].astype("int64")
    return frame
