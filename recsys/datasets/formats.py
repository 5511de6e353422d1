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
    USER_COL: int,
    ITEM_COL: int,
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


def _integral(value: float) -> int:
    if not math.isfinite(value) or value != int(value):
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
    """Scan line by line to name the first bad line (the slow path, only after a failure)."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            for number, text in enumerate(handle, start=1):
                if number <= fmt.n_header_lines:
                    _check_header(text, fmt, path)
                    continue
                parse_line(text, fmt, path, number)
    except RatingsFormatError as exc:
        return exc
    except UnicodeDecodeError as exc:
        return RatingsFormatError(
            path, _line_of_byte(path, exc.start), "<line>", f"not valid UTF-8: {exc.reason}"
        )
    return None


def _line_of_byte(path: Path, offset: int) -> int:
    with path.open("rb") as handle:
        return handle.read(offset).count(b"\n") + 1


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
            parse_options=pacsv.ParseOptions(delimiter="\t" if multi_char else fmt.separator),
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
