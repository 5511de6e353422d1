"""Native-format readers: one schema out, and bad lines named by file, line and field."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recsys.datasets.embedded import ML100K_ITEMS, ML100K_ROWS, ML100K_USERS, load_ml100k, ml100k_path
from recsys.datasets.formats import FORMATS, RatingsFormatError, format_for, read_ratings
from recsys.schema import RATINGS_COLUMNS

ROWS = [(1, 10, 4.0, 978300760), (1, 20, 3.5, 978300761), (2, 10, 0.5, 978300762)]


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _render(fmt_name: str, rows=ROWS) -> str:
    fmt = FORMATS[fmt_name]
    lines = [fmt.separator.join(fmt.header)] if fmt.header else []
    lines += [fmt.separator.join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("fmt_name", "file_name"),
    [
        ("u.data", "u.data"),
        ("ratings.dat", "ratings.dat"),
        ("ratings.csv", "ratings.csv"),
        ("recbole-inter", "x.inter"),
    ],
)
def test_each_format_reads_into_one_schema(tmp_path: Path, fmt_name: str, file_name: str):
    path = _write(tmp_path / file_name, _render(fmt_name))
    assert format_for(path).name == fmt_name
    frame = read_ratings(path)
    assert tuple(frame.columns) == RATINGS_COLUMNS
    assert [str(t) for t in frame.dtypes] == ["int64", "int64", "float64", "int64"]
    expected = pd.DataFrame(ROWS, columns=list(RATINGS_COLUMNS))
    pd.testing.assert_frame_equal(frame, expected)


def test_ratings_dat_streams_across_block_boundaries(tmp_path: Path):
    rows = [(u, u * 7 % 1000, 1.0 + u % 5, 978300000 + u) for u in range(1, 50_001)]
    path = _write(tmp_path / "ratings.dat", _render("ratings.dat", rows))
    frame = read_ratings(path)
    assert len(frame) == 50_000
    assert frame.iloc[-1].tolist() == [50_000, 50_000 * 7 % 1000, 1.0, 978350000]


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ("1\t10\t4.0", "<line>", "expected 4 fields"),
        ("1\t10\t4.0\t978300760\t9", "<line>", "expected 4 fields"),
        ("x1\t10\t4.0\t978300760", "user_id", "cannot parse 'x1'"),
        ("1\tabc\t4.0\t978300760", "item_id", "cannot parse 'abc'"),
        ("1\t10\tfour\t978300760", "rating", "cannot parse 'four'"),
        ("1\t10\t4.0\tyesterday", "timestamp", "cannot parse 'yesterday'"),
        ("1\t10\t4.0\t97830.5", "timestamp", "whole number"),
        ("1\t10\t\t978300760", "rating", "cannot parse ''"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path: Path, line: str, field: str, reason: str):
    text = _render("u.data") + line + "\n"
    path = _write(tmp_path / "u.data", text)
    with pytest.raises(RatingsFormatError) as info:
        read_ratings(path)
    error = info.value
    assert (error.path, error.line, error.field) == (str(path), 4, field)
    assert reason in error.reason
    assert str(error).startswith(f"{path}:4: field {field!r}")


def test_invalid_utf8_is_named(tmp_path: Path):
    path = tmp_path / "ratings.csv"
    path.write_bytes(_render("ratings.csv").encode() + b"3,1\xff0,4.0,978300770\n")
    with pytest.raises(RatingsFormatError, match=r"ratings.csv:5: field '<line>': not valid UTF-8"):
        read_ratings(path)


def test_wrong_header_is_named(tmp_path: Path):
    path = _write(tmp_path / "ratings.csv", "user,movie,rating,ts\n1,2,3.0,4\n")
    with pytest.raises(RatingsFormatError, match=r"ratings.csv:1: field '<header>'"):
        read_ratings(path)


def test_unknown_file_name_needs_explicit_format(tmp_path: Path):
    with pytest.raises(ValueError, match="cannot tell the ratings format"):
        format_for(tmp_path / "ratings.parquet")


def test_embedded_ml100k_is_the_full_dataset():
    assert ml100k_path().name == "ml-100k.inter"
    frame = load_ml100k()
    assert len(frame) == ML100K_ROWS
    assert frame["user_id"].nunique() == ML100K_USERS
    assert frame["item_id"].nunique() == ML100K_ITEMS
    assert set(frame["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert not frame.duplicated(["user_id", "item_id"]).any()
