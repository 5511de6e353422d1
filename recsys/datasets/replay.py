"""Replay a MovieLens ratings file as the daily drops of a feed, into a landing zone.

The nightly pipeline ingests *drops*: ``<landing>/<YYYY-MM-DD>/<file>`` holds the ratings
that arrived on that date (``python -m spark_jobs.ingest`` picks up every drop it has not
ingested yet). :func:`replay` cuts one native ratings file (any of
:data:`recsys.datasets.formats.FORMATS`) into such drops::

    <landing>/1998-04-15/ml-100k.inter     the history load: every rating dated before --start
    <landing>/1998-04-16/ml-100k.inter     the ratings of 1998-04-16 (UTC)
    ...
    <landing>/1998-04-22/ml-100k.inter     the ratings of --until; later ones have not "arrived"

* A data line goes to the drop of its *event date*: the UTC calendar day of its timestamp
  (the 4th field, epoch seconds). With ``start``, every line dated before ``start`` goes to
  one *history drop* dated ``start - 1 day``; with ``until``, lines dated after ``until`` are
  not written (they are counted in ``skipped_after_until``).
* Drop files are in the source's native format and carry the source's file name
  (``u.data``, ``ratings.dat``, ``ratings.csv``, ``*.inter``), so the reader can tell the
  format from the name; in formats with a header every drop file starts with the source's
  header line. Lines are copied byte for byte (never decoded and re-encoded), with the
  source's line endings, in the source's order within a drop; a last line without a newline
  gets ``\\n``.
* A line whose timestamp cannot be read (wrong field count, empty, not a whole number, not
  UTF-8) is not lost: it goes to the drop of the nearest preceding datable line in file order
  (the earliest drop when none precedes), or is not written when that drop is after
  ``until``, and is counted in ``undatable``. The ingest quarantines it downstream.
* Idempotent and atomic: a drop file is written under a hidden temporary name
  (``.<name>.*.tmp``, which Hadoop-style listings skip) in its drop directory and
  ``os.replace``-d into place, so a reader sees the old file or the new one, never half of
  one. A drop file whose bytes already equal what would be written is not touched, so its
  modification time (which the ingest ledger compares, with the size) does not move: replaying
  again writes nothing, and changing one source line rewrites only that line's drop. No
  directory is created for a drop without lines, and nothing is ever deleted: the landing zone
  may be shared with a real feed.

Scale: the file is read once into memory and scanned in blocks of whole lines. numpy finds
the line boundaries and vets each line (only digits, dots and exactly three separators); a
block of vetted lines goes to Arrow's CSV reader for its timestamps as a whole, and any other
line gets the strict per-line rules of :func:`recsys.datasets.formats.parse_line` (``::`` is
first rewritten as a tab, as the readers do). Lines are grouped by drop with one stable sort,
and each drop is written with one ``b"".join`` of the runs of consecutive source lines in it.
An ML-25M-sized ``ratings.csv`` (25M lines, 690 MB) replays into its ~9,000 drops in about
20 s on 2 cores with a peak of ~2.5 GB (a replay with nothing to write: ~15 s).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from recsys.datasets.formats import FORMATS, RatingsFormat, _check_header, _integral

log = logging.getLogger(__name__)

SECONDS_PER_DAY = 86_400
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
# Event days (since the epoch) that a dt.date can hold; a timestamp outside is undatable.
_MIN_DAY = dt.date.min.toordinal() - _EPOCH_ORDINAL
_MAX_DAY = dt.date.max.toordinal() - _EPOCH_ORDINAL
_MIN_TIMESTAMP, _MAX_TIMESTAMP = _MIN_DAY * SECONDS_PER_DAY, (_MAX_DAY + 1) * SECONDS_PER_DAY - 1
# Bytes per block of whole lines scanned at a time (bounds the scan's temporary arrays).
BLOCK_BYTES = 1 << 25
# The vectorised parse reads timestamp fields of at most this many characters.
_MAX_FAST_FIELD = 24
# Show a progress bar over the drops from this many on.
_PROGRESS_MIN_DROPS = 50
_N_FIELDS = 4
_NEWLINE, _CR, _DOT = ord("\n"), ord("\r"), ord(".")


@dataclass(frozen=True)
class ReplaySummary:
    """What one :func:`replay` did.

    ``drops`` counts the data lines of every drop written or already up to date;
    ``lines = sum(drops.values()) + skipped_after_until``. ``undatable`` lines are included in
    those counts (in the drop of their predecessor, or in ``skipped_after_until``).
    """

    drops: dict[dt.date, int]
    written: list[Path]
    unchanged: list[Path]
    skipped_after_until: int
    undatable: int
    lines: int

    def __str__(self) -> str:
        if not self.drops:
            span = "no drops"
        elif len(self.drops) == 1:
            span = f"1 drop ({min(self.drops)})"
        else:
            span = f"{len(self.drops):,} drops ({min(self.drops)} .. {max(self.drops)})"
        return (
            f"replayed {self.lines:,} lines into {span}: {len(self.written):,} files written, "
            f"{len(self.unchanged):,} unchanged; {self.skipped_after_until:,} lines after --until "
            f"not written; {self.undatable:,} undatable lines"
        )


def replay(
    source: Path | str,
    format_name: str,
    landing_dir: Path | str,
    start: dt.date | None = None,
    until: dt.date | None = None,
) -> ReplaySummary:
    """Cut ``source`` into daily drops ``<landing_dir>/<YYYY-MM-DD>/<source.name>``.

    See the module docstring for the rules. ``until`` may be ``start - 1 day`` (only the
    history drop), not earlier.
    """
    source, landing_dir = Path(source), Path(landing_dir)
    fmt = FORMATS[format_name]
    if start is not None and until is not None and until < start - dt.timedelta(days=1):
        raise ValueError(f"until {until} is before the history drop {start - dt.timedelta(days=1)}")
    data = source.read_bytes()
    header, data_offset = _split_header(data, fmt, source)
    bounds, timestamps, datable = _scan(data, data_offset, fmt)
    n_lines = len(bounds) - 1
    log.info("%s: %s data lines (%s bytes)", source, f"{n_lines:,}", f"{len(data):,}")
    if n_lines == 0:
        return ReplaySummary({}, [], [], 0, 0, 0)

    days = np.floor_divide(timestamps, SECONDS_PER_DAY)
    n_undatable = int(n_lines - np.count_nonzero(datable))
    if n_undatable == n_lines:
        raise ValueError(
            f"{source}: none of its {n_lines:,} data lines has a readable timestamp "
            f"(is it really in the {format_name!r} format?)"
        )
    if n_undatable:
        first = np.flatnonzero(~datable)[:5] + (2 if header else 1)
        log.warning(
            "%s: %s lines without a readable timestamp (lines %s%s) go to the drop of the line before them",
            source,
            f"{n_undatable:,}",
            ", ".join(map(str, first.tolist())),
            ", ..." if n_undatable > len(first) else "",
        )
    drop_days = _drop_days(days, datable, start)
    del days, timestamps
    order = _file_order_by_drop(drop_days, None if until is None else _day_number(until))
    skipped = n_lines - len(order)
    sorted_days = drop_days[order]
    del drop_days
    cuts = np.flatnonzero(np.diff(sorted_days)) + 1
    firsts = np.concatenate(([0], cuts)).astype(np.int64).tolist() if len(order) else []
    lasts = [*firsts[1:], len(order)]
    last_line_unterminated = not data.endswith(b"\n")

    drops: dict[dt.date, int] = {}
    written: list[Path] = []
    unchanged: list[Path] = []
    disable = len(firsts) < _PROGRESS_MIN_DROPS
    for lo, hi in tqdm(zip(firsts, lasts, strict=True), total=len(firsts), unit="drop", disable=disable):
        day = _date(int(sorted_days[lo]))
        lines = order[lo:hi]
        add_newline = last_line_unterminated and int(lines[-1]) == n_lines - 1
        target = landing_dir / day.isoformat() / source.name
        changed = _write_if_changed(target, _drop_bytes(data, header, bounds, lines, add_newline))
        (written if changed else unchanged).append(target)
        drops[day] = hi - lo
    summary = ReplaySummary(drops, written, unchanged, skipped, n_undatable, n_lines)
    log.info("%s -> %s: %s", source, landing_dir, summary)
    return summary


def _day_number(day: dt.date) -> int:
    return day.toordinal() - _EPOCH_ORDINAL


def _date(day_number: int) -> dt.date:
    return dt.date.fromordinal(day_number + _EPOCH_ORDINAL)


def _split_header(data: bytes, fmt: RatingsFormat, path: Path) -> tuple[bytes, int]:
    """The header line (with its line ending; empty for formats without) and where data begins."""
    if fmt.header is None or not data:
        return b"", 0
    end = data.find(b"\n")
    end = len(data) if end < 0 else end + 1
    header = data[:end]
    try:
        _check_header(header.decode("utf-8", errors="replace"), fmt, path)
    except ValueError as exc:
        log.warning("%s (copied to every drop as it is; the ingest gate checks headers)", exc)
    return header, end


def _drop_days(days: np.ndarray, datable: np.ndarray, start: dt.date | None) -> np.ndarray:
    """Each line's drop (day number): its event day, the history drop, or its predecessor's."""
    drop_days = days.copy()
    if start is not None:
        np.maximum(drop_days, _day_number(start) - 1, out=drop_days)
    if not datable.all():
        line = np.arange(len(days))
        predecessor = np.maximum.accumulate(np.where(datable, line, -1))
        first_drop = drop_days[datable].min()
        drop_days = np.where(predecessor >= 0, drop_days[np.maximum(predecessor, 0)], first_drop)
    return drop_days


def _file_order_by_drop(drop_days: np.ndarray, until: int | None) -> np.ndarray:
    """Indices of the lines to write (drop <= until), by drop, in file order within a drop."""
    kept = np.arange(len(drop_days)) if until is None else np.flatnonzero(drop_days <= until)
    if len(kept) == 0:
        return kept
    kept_days = drop_days[kept]
    lowest = kept_days.min()
    # A stable sort keeps file order; 16-bit keys (drops spanning < 179 years) get a radix sort.
    keys = (kept_days - lowest).astype(np.uint16) if kept_days.max() - lowest < 1 << 16 else kept_days
    return kept[np.argsort(keys, kind="stable")]


def _drop_bytes(
    data: bytes, header: bytes, bounds: np.ndarray, lines: np.ndarray, add_newline: bool
) -> bytes:
    """The header, then the given lines (ascending), copying runs of consecutive lines at once."""
    run_starts = np.flatnonzero(np.diff(lines) != 1) + 1
    begins = bounds[lines[np.concatenate(([0], run_starts))]]
    ends = bounds[lines[np.concatenate((run_starts - 1, [len(lines) - 1]))] + 1]
    pieces = [header]
    pieces.extend(data[b:e] for b, e in zip(begins.tolist(), ends.tolist(), strict=True))
    if add_newline:
        pieces.append(b"\n")
    return b"".join(pieces)


def _write_if_changed(target: Path, content: bytes) -> bool:
    """Atomically make ``target`` hold ``content``; False (and no write) if it already does."""
    try:
        if target.stat().st_size == len(content) and target.read_bytes() == content:
            return False
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


# ---------------------------------------------------------------------------- scanning


def _scan(data: bytes, offset: int, fmt: RatingsFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Line bounds of ``data[offset:]`` and each line's timestamp (valid where ``datable``).

    ``bounds`` has one entry more than there are lines: line ``i`` is
    ``data[bounds[i]:bounds[i + 1]]`` (with its newline, if any).
    """
    bounds_parts = [np.array([offset], np.int64)]
    ts_parts, ok_parts = [], []
    separator = fmt.separator.encode()
    lo, size = offset, len(data)
    n_fallback = 0
    while lo < size:
        hi = _block_end(data, lo)
        block = np.frombuffer(data, np.uint8, count=hi - lo, offset=lo)
        ends = np.flatnonzero(block == _NEWLINE) + 1
        if hi == size and not data.endswith(b"\n"):
            ends = np.append(ends, hi - lo)
        if len(separator) == 1:
            timestamps, fast = _fast_timestamps(block, separator[0])
        else:
            # "::" -> tab, as bytes.replace splits like str.split; a line that held a tab
            # (or a stray ":") is left to the strict parse.
            normalised = np.frombuffer(data[lo:hi].replace(separator, b"\t"), np.uint8)
            timestamps, fast = _fast_timestamps(normalised, ord("\t"))
            if data.find(b"\t", lo, hi) >= 0:
                tabs = np.flatnonzero(block == ord("\t"))
                fast[np.searchsorted(ends, tabs, side="right")] = False
        ok = fast.copy()
        slow = np.flatnonzero(~fast)
        n_fallback += len(slow)
        starts = np.concatenate(([0], ends[:-1]))
        for line in slow.tolist():
            parsed = _strict_timestamp(data[lo + starts[line] : lo + ends[line]], fmt.separator)
            if parsed is not None:
                timestamps[line], ok[line] = parsed, True
        bounds_parts.append(ends + lo)
        ts_parts.append(timestamps)
        ok_parts.append(ok)
        lo = hi
    if n_fallback:
        log.debug("%s lines parsed one by one", f"{n_fallback:,}")
    empty_i, empty_b = np.zeros(0, np.int64), np.zeros(0, bool)
    return (
        np.concatenate(bounds_parts),
        np.concatenate(ts_parts) if ts_parts else empty_i,
        np.concatenate(ok_parts) if ok_parts else empty_b,
    )


def _block_end(data: bytes, lo: int) -> int:
    """End of the block of whole lines from ``lo``: about BLOCK_BYTES, or the rest of the file."""
    limit = lo + BLOCK_BYTES
    if limit >= len(data):
        return len(data)
    end = data.rfind(b"\n", lo, limit) + 1
    if end > lo:
        return end
    end = data.find(b"\n", limit) + 1  # one line longer than a block
    return end if end > 0 else len(data)


def _strict_timestamp(line: bytes, separator: str) -> int | None:
    """The timestamp of one line by :func:`recsys.datasets.formats.parse_line`'s rules, or None.

    None also for a timestamp outside the years 1..9999 (no drop date for it).
    """
    try:
        fields = line.decode("utf-8").rstrip("\r\n").split(separator)
        if len(fields) != _N_FIELDS:
            return None
        timestamp = _integral(float(fields[3].strip()))
    except (UnicodeDecodeError, ValueError, OverflowError):
        return None
    return timestamp if _MIN_TIMESTAMP <= timestamp <= _MAX_TIMESTAMP else None


def _allowed(separator: int) -> np.ndarray:
    table = np.zeros(256, bool)
    table[ord("0") : ord("9") + 1] = True
    table[[_DOT, separator, _NEWLINE]] = True
    return table


def _fast_timestamps(block: np.ndarray, separator: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised timestamps of a block of whole lines, and where that parse can be trusted.

    Trusted only for lines of digits, dots and exactly three separators (plus one ``\\r``
    before the newline) whose last field is digits with at most one dot and which parses to a
    whole number a date can hold (< 2**53, so exact): there the strict rules give the same
    number. Every other line is left to :func:`_strict_timestamp`.
    """
    size = len(block)
    newlines = np.flatnonzero(block == _NEWLINE)
    ends = newlines if size == 0 or block[-1] == _NEWLINE else np.append(newlines, size)
    n = len(ends)
    timestamps = np.zeros(n, np.int64)
    if n == 0:
        return timestamps, np.zeros(0, bool)
    starts = np.concatenate(([0], newlines[: n - 1] + 1))
    content_end = ends.copy()
    has_cr = (content_end > starts) & (block[np.maximum(content_end - 1, 0)] == _CR)
    content_end[has_cr] -= 1

    fast = np.ones(n, bool)
    bad = np.flatnonzero(~_allowed(separator)[block])
    if len(bad):
        bad_line = np.searchsorted(ends, bad, side="left")
        really_bad = bad != content_end[bad_line]  # the one "\r" before the newline is fine
        fast[bad_line[really_bad]] = False
    field_start = _last_field_starts(np.flatnonzero(block == separator), starts, content_end, fast)
    width = content_end - field_start
    fast &= (width >= 1) & (width <= _MAX_FAST_FIELD)

    values = _arrow_last_field(block, separator, n) if fast.all() else None
    if values is None:  # some line is not for Arrow (or Arrow refused a field): field by field
        lines = np.flatnonzero(fast)
        values = np.full(n, np.nan)
        values[lines] = _parse_fields(block, field_start[lines], width[lines])
    good = fast & (values == np.floor(values)) & (values >= 0) & (values <= _MAX_TIMESTAMP)
    timestamps[good] = values[good].astype(np.int64)
    return timestamps, good


def _last_field_starts(
    separators: np.ndarray, starts: np.ndarray, content_end: np.ndarray, fast: np.ndarray
) -> np.ndarray:
    """Where each line's 4th field begins; clears ``fast`` for lines without exactly 3 separators."""
    n, per_line = len(starts), _N_FIELDS - 1
    if len(separators) == per_line * n:
        # The common case: if every line holds its own 3 separators, each holds exactly 3.
        grouped = separators.reshape(n, per_line)
        if ((grouped[:, 0] >= starts) & (grouped[:, -1] < content_end)).all():
            return grouped[:, -1] + 1
    if len(separators) == 0:
        fast[:] = False
        return starts
    before_end = np.searchsorted(separators, content_end)
    fast &= before_end - np.searchsorted(separators, starts) == per_line
    return separators[np.maximum(before_end - 1, 0)] + 1


def _arrow_last_field(block: np.ndarray, separator: int, n_lines: int) -> np.ndarray | None:
    """Arrow's multi-threaded parse of the 4th fields as float64 (lines already checked), or None."""
    names = [f"f{i}" for i in range(_N_FIELDS)]
    try:
        table = pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(block)),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(
                delimiter=chr(separator), quote_char=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=[names[-1]], column_types={names[-1]: pa.float64()}, null_values=[]
            ),
        )
    except pa.ArrowInvalid:
        return None
    column = table.column(0)
    if len(column) != n_lines or column.null_count:
        return None
    return column.to_numpy()


def _parse_fields(block: np.ndarray, begin: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Fields of digits and dots (``begin``/``width`` > 0) as float64; NaN where not a number."""
    values = np.full(len(begin), np.nan)
    if len(begin) == 0:
        return values
    columns = int(width.max())
    chars = np.zeros((len(begin), columns), np.uint8)
    for column in range(columns):
        inside = width > column
        chars[inside, column] = block[begin[inside] + column]
    dots = np.count_nonzero(chars == _DOT, axis=1)
    numeric = (dots <= 1) & (width > dots)  # then a valid float literal, as Python reads it
    values[numeric] = chars[numeric].view(f"S{columns}").ravel().astype(np.float64)
    return values
