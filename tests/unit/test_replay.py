"""Replaying a ratings file as daily drops into a landing zone (recsys.datasets.replay)."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recsys.config import load_config
from recsys.datasets import replay as replay_module
from recsys.datasets.__main__ import main
from recsys.datasets.embedded import ML100K_ROWS, ml100k_path
from recsys.datasets.formats import FORMATS
from recsys.datasets.replay import ReplaySummary, replay

DAY = 86_400
T0 = int(dt.datetime(2020, 1, 1, tzinfo=dt.UTC).timestamp())  # 2020-01-01 00:00:00 UTC
D1, D2, D3, D4 = (dt.date(2020, 1, d) for d in (1, 2, 3, 4))

FILE_NAMES = {
    "u.data": "u.data",
    "ratings.dat": "ratings.dat",
    "ratings.csv": "ratings.csv",
    "recbole-inter": "fixture.inter",
}

# (user, item, rating, timestamp): out of time order, with a repeated line, across four UTC days.
ROWS = [
    (1, 10, "4", T0 + 2 * DAY + 5),
    (1, 11, "3", T0 + DAY - 1),  # 2020-01-01 23:59:59
    (2, 10, "5", T0 + DAY),  # 2020-01-02 00:00:00
    (2, 12, "1", T0),
    (3, 13, "2", T0 + 3 * DAY + 100),
    (1, 11, "3", T0 + DAY - 1),  # the same line again
    (3, 10, "4", T0 + DAY + 7),
    (4, 14, "5", T0 + 2 * DAY),
]


def render(format_name: str, rows, *, float_ts: bool = False, newline: bytes = b"\n") -> bytes:
    fmt = FORMATS[format_name]
    lines = [] if fmt.header is None else [fmt.separator.join(fmt.header).encode() + newline]
    for number, (user, item, rating, ts) in enumerate(rows):
        stamp = f"{ts}.0" if float_ts and number % 2 == 0 else str(ts)
        lines.append(fmt.separator.join([str(user), str(item), rating, stamp]).encode() + newline)
    return b"".join(lines)


def write_source(tmp_path: Path, format_name: str, content: bytes) -> Path:
    path = tmp_path / "source" / FILE_NAMES[format_name]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def split_source(content: bytes, format_name: str) -> tuple[bytes, list[bytes]]:
    lines = content.splitlines(keepends=True)
    if FORMATS[format_name].header is None:
        return b"", lines
    return lines[0], lines[1:]


def read_drops(landing: Path, name: str, header: bytes) -> dict[dt.date, list[bytes]]:
    drops = {}
    for path in sorted(landing.glob(f"*/{name}")):
        content = path.read_bytes()
        assert content.startswith(header), path
        drops[dt.date.fromisoformat(path.parent.name)] = content[len(header) :].splitlines(keepends=True)
    return drops


def is_subsequence(part: list[bytes], whole: list[bytes]) -> bool:
    remaining = iter(whole)
    return all(any(line == candidate for candidate in remaining) for line in part)


def line_for(row, format_name: str) -> bytes:
    return FORMATS[format_name].separator.join(map(str, row)).encode() + b"\n"


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_round_trip_in_every_format(tmp_path, format_name):
    content = render(format_name, ROWS, float_ts=format_name == "recbole-inter")
    source = write_source(tmp_path, format_name, content)
    landing = tmp_path / "landing"

    summary = replay(source, format_name, landing)

    header, lines = split_source(content, format_name)
    drops = read_drops(landing, source.name, header)
    assert sorted(drops) == [D1, D2, D3, D4]
    assert Counter(line for drop in drops.values() for line in drop) == Counter(lines)
    for drop in drops.values():
        assert is_subsequence(drop, lines)
    assert summary.drops == {day: len(drop) for day, drop in drops.items()}
    assert summary.drops == {D1: 3, D2: 2, D3: 2, D4: 1}
    assert summary.lines == len(ROWS) and summary.undatable == 0 and summary.skipped_after_until == 0
    assert sorted(summary.written) == sorted(landing / day.isoformat() / source.name for day in drops)
    assert summary.unchanged == []


def test_recbole_float_timestamps_are_dated_like_integers(tmp_path):
    content = render("recbole-inter", ROWS, float_ts=True)
    assert b".0\n" in content
    source = write_source(tmp_path, "recbole-inter", content)
    summary = replay(source, "recbole-inter", tmp_path / "landing")
    assert summary.undatable == 0
    assert summary.drops == {D1: 3, D2: 2, D3: 2, D4: 1}


def test_ratings_dat_uses_double_colon(tmp_path):
    content = render("ratings.dat", ROWS)
    assert b"::" in content
    source = write_source(tmp_path, "ratings.dat", content)
    summary = replay(source, "ratings.dat", tmp_path / "landing")
    assert summary.undatable == 0
    assert (tmp_path / "landing" / "2020-01-01" / "ratings.dat").read_bytes().splitlines() == [
        b"1::11::3::1577923199",
        b"2::12::1::1577836800",
        b"1::11::3::1577923199",
    ]


def test_lines_go_to_their_utc_day(tmp_path, monkeypatch):
    # The local time zone must not matter: 23:59:59 UTC and 00:00:00 UTC are different days.
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    try:
        rows = [(1, 1, "5", T0 + DAY - 1), (1, 2, "5", T0 + DAY), (1, 3, "5", T0 - 1)]
        source = write_source(tmp_path, "ratings.csv", render("ratings.csv", rows))
        summary = replay(source, "ratings.csv", tmp_path / "landing")
    finally:
        monkeypatch.undo()  # the original TZ, then re-read it
        time.tzset()
    drops = read_drops(tmp_path / "landing", "ratings.csv", b"userId,movieId,rating,timestamp\n")
    assert drops == {
        dt.date(2019, 12, 31): [line_for(rows[2], "ratings.csv")],
        D1: [line_for(rows[0], "ratings.csv")],
        D2: [line_for(rows[1], "ratings.csv")],
    }
    assert summary.drops == {dt.date(2019, 12, 31): 1, D1: 1, D2: 1}


def test_history_before_start_and_nothing_after_until(tmp_path):
    source = write_source(tmp_path, "u.data", render("u.data", ROWS))
    landing = tmp_path / "landing"

    summary = replay(source, "u.data", landing, start=D3, until=D3)

    drops = read_drops(landing, "u.data", b"")
    # Everything before 01-03 is one history drop dated 01-02; 01-04 has not arrived.
    assert sorted(drops) == [D2, D3]
    assert drops[D2] == [line_for(row, "u.data") for row in ROWS if row[3] < T0 + 2 * DAY]
    assert drops[D3] == [line_for(row, "u.data") for row in ROWS if T0 + 2 * DAY <= row[3] < T0 + 3 * DAY]
    assert summary.drops == {D2: 5, D3: 2}
    assert summary.skipped_after_until == 1
    assert summary.lines == len(ROWS)
    assert not (landing / "2020-01-01").exists()  # no directory for a drop without lines
    assert not (landing / "2020-01-04").exists()


def test_until_only_the_history_drop(tmp_path):
    source = write_source(tmp_path, "u.data", render("u.data", ROWS))
    summary = replay(source, "u.data", tmp_path / "landing", start=D3, until=D2)
    assert summary.drops == {D2: 5}
    assert summary.skipped_after_until == 3
    with pytest.raises(ValueError, match="before the history drop"):
        replay(source, "u.data", tmp_path / "landing", start=D3, until=D1)


def test_undatable_lines_follow_their_predecessor(tmp_path):
    good = [line_for(row, "ratings.csv") for row in ROWS]
    bad = {
        "first": b"no,timestamp,at,all\n",  # before any datable line: the first drop
        "fields": b"1,2,3\n",
        "empty": b"\n",
        "text": b"1,2,3,yesterday\n",
        "fraction": f"1,2,3,{T0 + 0.5}\n".encode(),
        "utf8": b"1,\xff\xfe,3," + str(T0).encode() + b"\n",
        "late": b"9,9,9,9,9\n",  # after the 01-04 line: beyond until
    }
    header = b"userId,movieId,rating,timestamp\n"
    lines = [
        bad["first"],
        good[0],  # 01-03
        bad["fields"],
        bad["empty"],
        good[1],  # 01-01
        bad["text"],
        bad["fraction"],
        good[2],  # 01-02
        bad["utf8"],
        good[4],  # 01-04
        bad["late"],
        good[3],  # 01-01
    ]
    source = write_source(tmp_path, "ratings.csv", header + b"".join(lines))

    summary = replay(source, "ratings.csv", tmp_path / "landing", until=D3)

    drops = read_drops(tmp_path / "landing", "ratings.csv", header)
    assert drops == {
        D1: [bad["first"], good[1], bad["text"], bad["fraction"], good[3]],
        D2: [good[2], bad["utf8"]],
        D3: [good[0], bad["fields"], bad["empty"]],
    }
    assert summary.undatable == len(bad)
    assert summary.skipped_after_until == 2  # the 01-04 line and the bad line after it
    assert summary.lines == len(lines)
    assert sum(summary.drops.values()) + summary.skipped_after_until == summary.lines


def test_no_datable_line_is_an_error(tmp_path):
    source = write_source(tmp_path, "u.data", render("ratings.csv", ROWS)[32:])  # commas, not tabs
    with pytest.raises(ValueError, match="readable timestamp"):
        replay(source, "u.data", tmp_path / "landing")
    assert not (tmp_path / "landing").exists()


def test_line_endings_kept_and_last_newline_added(tmp_path):
    content = render("ratings.csv", ROWS, newline=b"\r\n")
    content = content[:-2]  # the last line has no line ending
    source = write_source(tmp_path, "ratings.csv", content)
    landing = tmp_path / "landing"

    summary = replay(source, "ratings.csv", landing)

    assert summary.undatable == 0
    header = b"userId,movieId,rating,timestamp\r\n"
    drops = read_drops(landing, "ratings.csv", header)
    expected = [line + b"\r\n" for line in content.split(b"\r\n")[1:]]
    expected[-1] = expected[-1][:-2] + b"\n"
    assert Counter(line for drop in drops.values() for line in drop) == Counter(expected)
    assert drops[D3][-1] == b"4,14,5,1578009600\n"


def test_blocks_do_not_change_the_result(tmp_path, monkeypatch):
    long_line = b"1,2,3," + b"0" * 200 + str(T0 + DAY).encode() + b"\n"  # longer than a block
    content = render("ratings.csv", ROWS * 5)
    content = content + long_line + content.split(b"\n", 1)[1]
    source = write_source(tmp_path, "ratings.csv", content)
    reference = replay(source, "ratings.csv", tmp_path / "one-block")
    monkeypatch.setattr(replay_module, "BLOCK_BYTES", 64)
    blocked = replay(source, "ratings.csv", tmp_path / "blocks")
    assert blocked.drops == reference.drops
    assert reference.drops[D2] == 2 * 10 + 1
    for day in reference.drops:
        name = f"{day}/ratings.csv"
        assert (tmp_path / "blocks" / name).read_bytes() == (tmp_path / "one-block" / name).read_bytes()


TRICKY_TIMESTAMPS = [
    "881250949",
    "0881250949",
    "881250949.",
    "881250949.000",
    "881250949.5",
    ".5",
    "8.8125e8",
    " 881250949 ",
    "+881250949",
    "-86401",
    "1.2.3",
    ".",
    "",
    "nan",
    "inf",
    "9007199254740993",
    "123456789012345678901234567890",
    "881_250_949",
]


@pytest.mark.parametrize("format_name", ["ratings.csv", "ratings.dat"])
def test_vectorised_parse_agrees_with_the_strict_rules(format_name):
    sep = FORMATS[format_name].separator
    lines = [f"1{sep}2{sep}3.5{sep}{stamp}\n".encode() for stamp in TRICKY_TIMESTAMPS]
    lines += [
        b"1:::2::3::881250949\n",
        b"1::::2::881250949\n",
        b"1\t2::3::4::881250949\n",
        b"1,2,3,881250949\r\r\n",
        b"1,2,3,881250949\r\n",
        b"1" + sep.encode() + b"2" + sep.encode() + b"\xc3\xa9" + sep.encode() + b"881250949\n",
    ]
    data = b"".join(lines)
    bounds, timestamps, datable = replay_module._scan(data, 0, FORMATS[format_name])
    assert bounds.tolist() == np.cumsum([0] + [len(line) for line in lines]).tolist()
    expected = [replay_module._strict_timestamp(line, sep) for line in lines]
    assert datable.tolist() == [value is not None for value in expected]
    assert [int(t) if ok else None for t, ok in zip(timestamps, datable, strict=True)] == expected
    assert expected[0] == 881250949 and expected[9] == -86401 and expected[4] is None


@pytest.mark.parametrize("stamp", [s for s in TRICKY_TIMESTAMPS if s and set(s) <= set("0123456789.")])
def test_arrow_parse_agrees_with_the_strict_rules(stamp):
    # Blocks whose lines are all digits, dots and 3 separators go to Arrow's reader as a whole.
    lines = [b"1,2,3.5,881250949\n", f"1,2,3.5,{stamp}\n".encode(), b"1,2,3,881250950\r\n"]
    _, timestamps, datable = replay_module._scan(b"".join(lines), 0, FORMATS["ratings.csv"])
    expected = [replay_module._strict_timestamp(line, ",") for line in lines]
    assert datable.tolist() == [value is not None for value in expected]
    assert [int(t) if ok else None for t, ok in zip(timestamps, datable, strict=True)] == expected


def test_clean_blocks_take_the_arrow_path(tmp_path, monkeypatch):
    def refuse(*args):
        raise AssertionError("field-by-field parse used for a clean block")

    monkeypatch.setattr(replay_module, "_parse_fields", refuse)
    source = write_source(tmp_path, "recbole-inter", render("recbole-inter", ROWS, float_ts=True))
    assert replay(source, "recbole-inter", tmp_path / "landing").drops == {D1: 3, D2: 2, D3: 2, D4: 1}


def test_second_replay_writes_nothing(tmp_path):
    source = write_source(tmp_path, "ratings.csv", render("ratings.csv", ROWS))
    landing = tmp_path / "landing"
    first = replay(source, "ratings.csv", landing, start=D2)
    past = 1_500_000_000_000_000_000
    for path in first.written:
        os.utime(path, ns=(past, past))

    second = replay(source, "ratings.csv", landing, start=D2)

    assert second.written == []
    assert sorted(second.unchanged) == sorted(first.written)
    assert second.drops == first.drops
    assert all(path.stat().st_mtime_ns == past for path in first.written)
    assert [p.name for p in landing.rglob("*") if p.is_file()] == ["ratings.csv"] * len(first.drops)


def test_changing_one_line_rewrites_only_its_drop(tmp_path):
    content = render("ratings.csv", ROWS)
    source = write_source(tmp_path, "ratings.csv", content)
    landing = tmp_path / "landing"
    first = replay(source, "ratings.csv", landing)
    past = 1_500_000_000_000_000_000
    for path in first.written:
        os.utime(path, ns=(past, past))

    source.write_bytes(content.replace(b"3,13,2,", b"3,13,4,"))  # the one 01-04 line
    second = replay(source, "ratings.csv", landing)

    changed = landing / "2020-01-04" / "ratings.csv"
    assert second.written == [changed]
    assert changed.read_bytes().endswith(b"3,13,4,1578096100\n")
    assert changed.stat().st_mtime_ns != past
    assert all(path.stat().st_mtime_ns == past for path in first.written if path != changed)
    assert len(second.unchanged) == 3


def test_foreign_drops_are_left_alone(tmp_path):
    landing = tmp_path / "landing"
    foreign = [landing / "2020-01-02" / "feed.csv", landing / "2019-06-01" / "ratings.csv"]
    for path in foreign:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"from the real feed\n")
    source = write_source(tmp_path, "ratings.csv", render("ratings.csv", ROWS))

    replay(source, "ratings.csv", landing)

    assert all(path.read_bytes() == b"from the real feed\n" for path in foreign)
    assert (landing / "2020-01-02" / "ratings.csv").is_file()


def test_summary_str():
    summary = ReplaySummary({D1: 3, D2: 4}, [Path("a")], [Path("b")], 5, 1, 12)
    text = str(summary)
    assert "12 lines" in text and "2 drops (2020-01-01 .. 2020-01-02)" in text
    assert "1 files written" in text and "1 unchanged" in text
    assert "5 lines after --until" in text and "1 undatable" in text
    with pytest.raises(AttributeError):
        summary.lines = 0  # frozen


def test_cli_replays_an_input_file(tmp_path, capsys):
    source = write_source(tmp_path, "ratings.dat", render("ratings.dat", ROWS))
    landing = tmp_path / "landing"
    argv = ["replay", "--input", str(source), "--format", "ratings.dat", "--landing", str(landing)]

    main([*argv, "--start", "2020-01-02", "--until", "2020-01-03"])

    out = capsys.readouterr().out
    assert "replayed 8 lines into 3 drops (2020-01-01 .. 2020-01-03)" in out
    assert "1 lines after --until not written" in out
    assert sorted(p.name for p in landing.iterdir()) == ["2020-01-01", "2020-01-02", "2020-01-03"]

    main([*argv[:3], *argv[5:], "--start", "2020-01-02", "--until", "2020-01-03"])  # format from the name
    assert "0 files written" in capsys.readouterr().out


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["replay", "ml-100k", "--input", str(tmp_path / "x.csv")])
    with pytest.raises(SystemExit):
        main(["replay", "ml-100k", "--start", "01/02/2020"])
    with pytest.raises(SystemExit):
        main(["replay", "ml-100k", "--start", "2020-01-05", "--until", "2020-01-01"])
    assert "--start" in capsys.readouterr().err


def test_cli_dataset_into_the_configured_landing_zone(tmp_path, capsys):
    overrides = [f"lake.root={tmp_path}"]
    main(["--set", overrides[0], "replay", "ml-100k", "--start", "1998-04-22"])
    assert "replayed 100,000 lines into 2 drops (1998-04-21 .. 1998-04-22)" in capsys.readouterr().out
    landing = tmp_path / load_config(overrides=overrides).pipeline.landing_dir
    assert sorted(p.name for p in landing.iterdir()) == ["1998-04-21", "1998-04-22"]
    assert (landing / "1998-04-22" / "ml-100k.inter").is_file()


def test_ml100k_week(tmp_path):
    landing = tmp_path / "landing"
    summary = replay(
        ml100k_path(), "recbole-inter", landing, start=dt.date(1998, 4, 16), until=dt.date(1998, 4, 22)
    )

    days = [dt.date(1998, 4, 15) + dt.timedelta(days=d) for d in range(8)]
    assert list(summary.drops) == days
    assert sum(summary.drops.values()) == ML100K_ROWS == summary.lines
    assert summary.skipped_after_until == 0 and summary.undatable == 0
    header, lines = split_source(ml100k_path().read_bytes(), "recbole-inter")
    drops = read_drops(landing, "ml-100k.inter", header)
    assert list(drops) == days
    assert {day: len(drop) for day, drop in drops.items()} == summary.drops
    assert Counter(line for drop in drops.values() for line in drop) == Counter(lines)
    for day, drop in drops.items():
        stamps = [int(float(line.split(b"\t")[3])) for line in drop]
        if day == days[0]:
            assert max(stamps) < int(dt.datetime(1998, 4, 16, tzinfo=dt.UTC).timestamp())
        else:
            assert {dt.datetime.fromtimestamp(s, dt.UTC).date() for s in stamps} == {day}
