"""Readers for MovieLens' native movie files, all producing one items schema.

================  =========  ========  ======  ==============================================
format            separator  encoding  header  used by
================  =========  ========  ======  ==============================================
``u.item``        ``|``      latin-1   no      ml-100k (GroupLens' original)
``movies.dat``    ``::``     latin-1   no      ml-1m
``movies.csv``    ``,``      UTF-8     yes     ml-latest-small, ml-20m, ml-25m, ml-32m,
                                               the synthetic generator
``recbole-item``  tab        UTF-8     yes     RecBole atomic files (the embedded ml-100k)
================  =========  ========  ======  ==============================================

Every reader returns a pandas DataFrame with columns ``item_id`` (int64), ``title`` (str, without
a trailing `` (YYYY)``), ``year`` (nullable Int64: the title's trailing ``(YYYY)``, or RecBole's
``release_year``; null when there is none) and ``genres`` (a list of str, empty for
``(no genres listed)`` or no genre flag set). ``movies.csv`` is read as RFC 4180 CSV (quoted
titles with commas and quotes). A malformed line or a repeated item id raises
:class:`ItemsFormatError` naming the file, the 1-based line number and the field.

:func:`item_source` gives the movie file of the configured ``data.dataset``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from recsys.schema import ITEM_COL

if TYPE_CHECKING:
    from recsys.config import Config

TITLE_COL = "title"
YEAR_COL = "year"
GENRES_COL = "genres"
ITEMS_COLUMNS = (ITEM_COL, TITLE_COL, YEAR_COL, GENRES_COL)

NO_GENRES = "(no genres listed)"
# u.item's 19 genre flags, in file order.
U_ITEM_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
MOVIES_CSV_HEADER = ("movieId", "title", "genres")
RECBOLE_ITEM_HEADER = ("item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq")
# release_year values of recbole's converted ml-100k that are not years: item 267's placeholder
# ("unkonwn", sic) and item 1412, whose original title ends "(1995) (V)" (the year stays in its title).
RECBOLE_NOT_A_YEAR = frozenset({"unkonwn", "V"})

_TITLE_YEAR = re.compile(r"(?P<title>.*?\S)\s*\((?P<year>[0-9]{4})\)")
_DIGITS = re.compile(r"[0-9]+")
_U_ITEM_DATE = re.compile(r"[0-9]{2}-[A-Z][a-z]{2}-[0-9]{4}")

Row = tuple[int, str, int | None, list[str]]


class ItemsFormatError(ValueError):
    """A movie file has a line that does not match its format (or repeats an item id)."""

    def __init__(self, path: Path | str, line: int, field: str, reason: str) -> None:
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        super().__init__(f"{path}:{line}: field {field!r}: {reason}")


def split_title_year(title: str) -> tuple[str, int | None]:
    """``"Heat (1995)"`` -> ``("Heat", 1995)``; a title without a trailing ``(YYYY)`` -> ``(title, None)``."""
    title = title.strip()
    match = _TITLE_YEAR.fullmatch(title)
    if match is None:
        return title, None
    return match["title"], int(match["year"])


def items_format_for(path: Path | str) -> str:
    """Guess the format from a file name (``u.item``, ``*.dat``, ``*.csv``, ``*.item``)."""
    name = Path(path).name
    if name == "u.item":
        return "u.item"
    if name.endswith(".dat"):
        return "movies.dat"
    if name.endswith(".csv"):
        return "movies.csv"
    if name.endswith(".item"):
        return "recbole-item"
    raise ValueError(f"{path}: cannot tell the movie file format from the name; pass one of {ITEMS_FORMATS}")


def read_items(path: Path | str, format_name: str | None = None) -> pd.DataFrame:
    """Read one movie file into the items schema, strictly (see the module docstring)."""
    path = Path(path)
    format_name = format_name or items_format_for(path)
    if format_name not in _READERS:
        raise ValueError(f"unknown movie file format {format_name!r}; choose one of {ITEMS_FORMATS}")
    first_line: dict[int, int] = {}
    rows: list[Row] = []
    for line, row in _READERS[format_name](path):
        if row[0] in first_line:
            raise ItemsFormatError(
                path, line, ITEM_COL, f"item id {row[0]} repeated (first on line {first_line[row[0]]})"
            )
        first_line[row[0]] = line
        rows.append(row)
    ids, titles, years, genres = zip(*rows, strict=True) if rows else ((), (), (), ())
    return pd.DataFrame(
        {
            ITEM_COL: pd.Series(ids, dtype="int64"),
            TITLE_COL: pd.Series(titles, dtype=object),
            YEAR_COL: pd.Series(years, dtype="Int64"),
            GENRES_COL: pd.Series(genres, dtype=object),
        }
    )


def item_source(config: Config) -> tuple[Path, str]:
    """The movie file of ``config.data.dataset`` and its format, fetched or generated if not yet present.

    ml-100k: recbole's ``ml-100k.item`` beside the embedded ratings; a GroupLens release: the
    archive's movie file; synthetic: the ``movies.csv`` beside the generated ratings.
    """
    name = config.data.dataset
    if name == "ml-100k":
        from recsys.datasets.embedded import ml100k_path

        path = ml100k_path().with_name("ml-100k.item")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: recbole is installed but its ml-100k item file is missing")
        return path, "recbole-item"
    if name == "synthetic":
        from recsys.datasets import synthetic_path
        from recsys.datasets.synthetic import MOVIES_FILE, write_synthetic_movies

        path = synthetic_path(config).with_name(MOVIES_FILE)
        if not path.exists():
            write_synthetic_movies(path, scale=config.data.synthetic_scale, seed=config.data.synthetic_seed)
        return path, "movies.csv"
    from recsys.datasets.download import RELEASES, download_movies

    path = download_movies(name, config.project_path(config.data.raw_dir))
    return path, RELEASES[name].movies_format


# ------------------------------------------------------------------ the readers


def _text(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ItemsFormatError(path, line, "<line>", f"not valid {encoding}: {exc.reason}") from None


def _lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of every line; split on ``\\n`` only (latin-1 has other breaks)."""
    lines = _text(path, encoding).split("\n")
    if lines[-1] == "":
        lines.pop()
    for number, text in enumerate(lines, start=1):
        text = text.removesuffix("\r")
        if not text:
            raise ItemsFormatError(path, number, "<line>", "empty line")
        yield number, text


def _fields(path: Path, line: int, text: str, separator: str, expected: int) -> list[str]:
    fields = text.split(separator)
    if len(fields) != expected:
        raise ItemsFormatError(
            path, line, "<line>", f"expected {expected} fields separated by {separator!r}, got {len(fields)}"
        )
    return fields


def _item_id(path: Path, line: int, raw: str) -> int:
    if not _DIGITS.fullmatch(raw):
        raise ItemsFormatError(path, line, ITEM_COL, f"{raw!r} is not a non-negative integer")
    return int(raw)


def _title(path: Path, line: int, raw: str) -> tuple[str, int | None]:
    if "\n" in raw or "\r" in raw:
        raise ItemsFormatError(path, line, TITLE_COL, "spans lines (an unbalanced quote?)")
    title, year = split_title_year(raw)
    if not title:
        raise ItemsFormatError(path, line, TITLE_COL, "empty")
    return title, year


def _genre_list(path: Path, line: int, raw: str, separator: str) -> list[str]:
    """Genres separated by ``separator``; ``(no genres listed)`` is none."""
    if raw == NO_GENRES:
        return []
    genres = raw.split(separator)
    if any(not genre or genre != genre.strip() or not genre.isprintable() for genre in genres):
        raise ItemsFormatError(path, line, GENRES_COL, f"{raw!r} is not a {separator!r}-separated list")
    return genres


def _read_u_item(path: Path) -> Iterator[tuple[int, Row]]:
    for line, text in _lines(path, "latin-1"):
        fields = _fields(path, line, text, "|", 5 + len(U_ITEM_GENRES))
        item_id = _item_id(path, line, fields[0])
        title, year = _title(path, line, fields[1])
        if fields[2] and not _U_ITEM_DATE.fullmatch(fields[2]):
            raise ItemsFormatError(path, line, "release_date", f"{fields[2]!r} is not like 01-Jan-1995")
        flags = fields[5:]
        if any(flag not in ("0", "1") for flag in flags):
            raise ItemsFormatError(path, line, GENRES_COL, f"genre flags {'|'.join(flags)!r} are not all 0/1")
        genres = [genre for genre, flag in zip(U_ITEM_GENRES, flags, strict=True) if flag == "1"]
        yield line, (item_id, title, year, genres)


def _read_movies_dat(path: Path) -> Iterator[tuple[int, Row]]:
    for line, text in _lines(path, "latin-1"):
        raw_id, raw_title, raw_genres = _fields(path, line, text, "::", 3)
        title, year = _title(path, line, raw_title)
        yield line, (_item_id(path, line, raw_id), title, year, _genre_list(path, line, raw_genres, "|"))


def _header(path: Path, found: tuple[str, ...] | None, expected: tuple[str, ...], separator: str) -> None:
    if found != expected:
        got = "an empty file" if found is None else repr(separator.join(found))
        raise ItemsFormatError(
            path, 1, "<header>", f"expected header {separator.join(expected)!r}, got {got}"
        )


def _read_movies_csv(path: Path) -> Iterator[tuple[int, Row]]:
    reader = csv.reader(io.StringIO(_text(path, "utf-8"), newline=""), strict=True)
    while True:
        line = reader.line_num + 1  # a quoted field may span lines: a record starts after the last
        try:
            fields = next(reader)
        except StopIteration:
            if line == 1:
                _header(path, None, MOVIES_CSV_HEADER, ",")
            return
        except csv.Error as exc:
            raise ItemsFormatError(path, reader.line_num, "<line>", f"bad CSV: {exc}") from None
        if line == 1:
            _header(path, tuple(fields), MOVIES_CSV_HEADER, ",")
            continue
        if len(fields) != 3:
            raise ItemsFormatError(path, line, "<line>", f"expected 3 CSV fields, got {len(fields)}")
        raw_id, raw_title, raw_genres = fields
        title, year = _title(path, line, raw_title)
        yield line, (_item_id(path, line, raw_id), title, year, _genre_list(path, line, raw_genres, "|"))


def _read_recbole_item(path: Path) -> Iterator[tuple[int, Row]]:
    lines = _lines(path, "utf-8")
    first = next(lines, None)
    _header(path, None if first is None else tuple(first[1].split("\t")), RECBOLE_ITEM_HEADER, "\t")
    for line, text in lines:
        fields = _fields(path, line, text, "\t", len(RECBOLE_ITEM_HEADER))
        raw_id, raw_title, raw_year, raw_class = fields
        title, title_year = _title(path, line, raw_title)
        if raw_year == "" or raw_year in RECBOLE_NOT_A_YEAR:
            year = title_year
        elif re.fullmatch(r"[0-9]{4}", raw_year):
            year = int(raw_year)
            if title_year is not None and title_year != year:
                raise ItemsFormatError(
                    path, line, "release_year", f"{raw_year!r} but the title ends in ({title_year})"
                )
        else:
            raise ItemsFormatError(path, line, "release_year", f"{raw_year!r} is not a year")
        genres = [] if raw_class == "" else _genre_list(path, line, raw_class, " ")
        yield line, (_item_id(path, line, raw_id), title, year, genres)


_READERS: dict[str, Callable[[Path], Iterator[tuple[int, Row]]]] = {
    "u.item": _read_u_item,
    "movies.dat": _read_movies_dat,
    "movies.csv": _read_movies_csv,
    "recbole-item": _read_recbole_item,
}
ITEMS_FORMATS = tuple(_READERS)
