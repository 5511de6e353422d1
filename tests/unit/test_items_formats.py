"""The movie file readers on small hand-written files, the embedded ML-100K items, and item_source."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from recsys.datasets import download as dl
from recsys.datasets.items import (
    ItemsFormatError,
    item_source,
    items_format_for,
    read_items,
    split_title_year,
)
from tests.conftest import config_with_lake

CITY = "City of Lost Children, The (Cité des enfants perdus, La)"
KIDS = "Children's"
RECBOLE_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"


def _flags(*genres: str) -> str:
    """u.item's 19 genre flags with ``genres`` set."""
    names = "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir "
    names += "Horror Musical Mystery Romance Sci-Fi Thriller War Western"
    return "|".join("1" if name in genres else "0" for name in names.split())


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _records(frame: pd.DataFrame) -> list[tuple]:
    return [
        (r.item_id, r.title, None if pd.isna(r.year) else int(r.year), list(r.genres))
        for r in frame.itertuples(index=False)
    ]


def _error(path: Path, fmt: str | None = None) -> ItemsFormatError:
    with pytest.raises(ItemsFormatError) as info:
        read_items(path, fmt)
    return info.value


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Toy Story (1995)", ("Toy Story", 1995)),
        (f"{CITY} (1995)", (CITY, 1995)),
        ("Babylon 5", ("Babylon 5", None)),
        ("Land Before Time III: The Time of the Great Giving (1995) (V)", None),
        ("Fawlty Towers (1975-1979)", ("Fawlty Towers (1975-1979)", None)),
        ("1984 (1984)", ("1984", 1984)),
        ("Hamlet (1996) ", ("Hamlet", 1996)),
        ("(1995)", ("(1995)", None)),
    ],
)
def test_split_title_year(title: str, expected: tuple | None) -> None:
    assert split_title_year(title) == (expected or (title, None))


def test_u_item_latin1_flags_and_years(tmp_path: Path) -> None:
    text = (
        f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
        f"{_flags('Animation', KIDS, 'Comedy')}\n"
        f"267|unknown||||{_flags('unknown')}\n"
        f"543|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/x|{_flags('Drama', 'Musical')}\n"
        f"1412|Land Before Time III: The Time of the Great Giving (1995) (V)|10-Feb-1995||"
        f"http://us.imdb.com/M/y|{_flags('Animation', KIDS)}\n"
        f"1600|{CITY} (1995)|01-Jan-1995|||{_flags()}\n"
    )
    path = _write(tmp_path, "u.item", text, "latin-1")
    assert b"Mis\xe9rables" in path.read_bytes()  # latin-1, not valid UTF-8
    frame = read_items(path)
    assert list(frame.columns) == ["item_id", "title", "year", "genres"]
    assert str(frame["item_id"].dtype) == "int64" and str(frame["year"].dtype) == "Int64"
    assert _records(frame) == [
        (1, "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
        (267, "unknown", None, ["unknown"]),
        (543, "Misérables, Les", 1995, ["Drama", "Musical"]),
        (
            1412,
            "Land Before Time III: The Time of the Great Giving (1995) (V)",
            None,
            ["Animation", "Children's"],
        ),
        (1600, CITY, 1995, []),
    ]


def test_movies_dat_latin1_crlf_and_no_genres(tmp_path: Path) -> None:
    text = (
        "1::Toy Story (1995)::Animation|Children's|Comedy\r\n"
        f"29::{CITY} (1995)::Adventure|Sci-Fi\r\n"
        "3952::Contender, The (2000)::Drama|Thriller\r\n"
        "4000::Untitled::(no genres listed)\r\n"
    )
    path = _write(tmp_path, "movies.dat", text, "latin-1")
    assert b"Cit\xe9" in path.read_bytes()
    assert _records(read_items(path)) == [
        (1, "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
        (29, CITY, 1995, ["Adventure", "Sci-Fi"]),
        (3952, "Contender, The", 2000, ["Drama", "Thriller"]),
        (4000, "Untitled", None, []),
    ]


def test_movies_csv_quoting_utf8_and_no_genres(tmp_path: Path) -> None:
    text = (
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        f'29,"{CITY} (1995)",Adventure|Drama|Fantasy|Mystery|Sci-Fi\n'
        '3,"""Great Performances"" Cats (1998)",Musical\n'
        '4,"Dr. Strangelove, or: How I Learned to Stop Worrying and Love the ""Bomb"" (1964)",Comedy|War\n'
        "5,Babylon 5,Sci-Fi\n"
        "6,Ночной дозор (2004),(no genres listed)\n"
    )
    path = _write(tmp_path, "movies.csv", text)
    assert _records(read_items(path)) == [
        (1, "Toy Story", 1995, ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]),
        (29, CITY, 1995, ["Adventure", "Drama", "Fantasy", "Mystery", "Sci-Fi"]),
        (3, '"Great Performances" Cats', 1998, ["Musical"]),
        (
            4,
            'Dr. Strangelove, or: How I Learned to Stop Worrying and Love the "Bomb"',
            1964,
            ["Comedy", "War"],
        ),
        (5, "Babylon 5", None, ["Sci-Fi"]),
        (6, "Ночной дозор", 2004, []),
    ]


def test_recbole_item_years_from_field_or_title(tmp_path: Path) -> None:
    text = (
        f"{RECBOLE_HEADER}"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "267\tunkonwn\tunkonwn\tunknown\n"
        "543\tMisérables, Les\t1995\tDrama Musical\n"
        "1412\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's\n"
        "1700\tNo Year Known\t\t\n"
    )
    assert _records(read_items(_write(tmp_path, "x.item", text))) == [
        (1, "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
        (267, "unkonwn", None, ["unknown"]),
        (543, "Misérables, Les", 1995, ["Drama", "Musical"]),
        (1412, "Land Before Time III: The Time of the Great Giving", 1995, ["Animation", "Children's"]),
        (1700, "No Year Known", None, []),
    ]


@pytest.mark.parametrize(
    ("name", "fmt", "text", "line", "field"),
    [
        ("u.item", None, f"1|A (1995)|||u|{_flags('Drama')}\n2|B (1996)|||u|{_flags()}|0\n", 2, "<line>"),
        ("u.item", None, f"1|A (1995)|||u|{_flags('Drama')}\n2|B|||u|{_flags()[:-1]}2\n", 2, "genres"),
        ("u.item", None, f"1|A (1995)|||u|{_flags()}\nx2|B|||u|{_flags()}\n", 2, "item_id"),
        ("u.item", None, f"1|A (1995)|1995-01-01||u|{_flags()}\n", 1, "release_date"),
        ("movies.dat", None, "1::A (1995)::Drama\n2::B (1996)\n", 2, "<line>"),
        ("movies.dat", None, "1::A (1995)::Drama\n\n3::C::Drama\n", 2, "<line>"),
        ("movies.dat", None, "1::A (1995)::Drama\n2::B::Drama||Comedy\n", 2, "genres"),
        ("movies.dat", None, "1::A (1995)::Drama\n2:: ::Drama\n", 2, "title"),
        ("movies.csv", None, "movieId,name,genres\n1,A,Drama\n", 1, "<header>"),
        ("movies.csv", None, "", 1, "<header>"),
        ("movies.csv", None, "movieId,title,genres\n1,A,Drama\n-2,B,Drama\n", 3, "item_id"),
        ("movies.csv", None, 'movieId,title,genres\n1,A,Drama\n2,"B" (1999),Drama\n', 3, "<line>"),
        ("movies.csv", None, "movieId,title,genres\n1,A,Drama\n2,B,Drama,Extra\n", 3, "<line>"),
        ("movies.csv", None, "movieId,title,genres\n1,A,Drama\n2,B,\n", 3, "genres"),
        ("movies.csv", None, 'movieId,title,genres\n1,"A\n(1995)",Drama\n', 2, "title"),
        ("movies.csv", None, 'movieId,title,genres\n1,A,"Drama|\nWar"\n2,B,Drama\nx,C,War\n', 2, "genres"),
        (
            "ml.item",
            None,
            "item_id:token\tmovie_title:token_seq\tclass:token_seq\n1\tA\tDrama\n",
            1,
            "<header>",
        ),
        ("ml.item", "recbole-item", "h\n", 1, "<header>"),
        (
            "ml.item",
            None,
            RECBOLE_HEADER + "1\tA\t19x5\tDrama\n",
            2,
            "release_year",
        ),
        (
            "ml.item",
            None,
            RECBOLE_HEADER + "1\tA (1994)\t1995\tDrama\n",
            2,
            "release_year",
        ),
        (
            "ml.item",
            None,
            RECBOLE_HEADER + "1\tA\t1995\tDrama  War\n",
            2,
            "genres",
        ),
    ],
)
def test_malformed_line_names_file_line_and_field(
    tmp_path: Path, name: str, fmt: str | None, text: str, line: int, field: str
) -> None:
    path = _write(tmp_path, name, text, "latin-1" if name in ("u.item", "movies.dat") else "utf-8")
    error = _error(path, fmt)
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert str(error).startswith(f"{path}:{line}: field {field!r}: ")


def test_invalid_utf8_in_movies_csv_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_bytes("movieId,title,genres\n1,A,Drama\n2,Cité,Drama\n".encode("latin-1"))
    error = _error(path)
    assert (error.line, error.field) == (3, "<line>")
    assert "not valid utf-8" in error.reason


@pytest.mark.parametrize(
    ("name", "text", "encoding"),
    [
        ("u.item", f"5|A (1995)|||u|{_flags()}\n6|B|||u|{_flags()}\n5|C|||u|{_flags()}\n", "latin-1"),
        ("movies.csv", "movieId,title,genres\n5,A,Drama\n6,B,Drama\n5,C,Drama\n", "utf-8"),
    ],
)
def test_duplicate_item_ids_name_both_lines(tmp_path: Path, name: str, text: str, encoding: str) -> None:
    error = _error(_write(tmp_path, name, text, encoding))
    line = 3 if name == "u.item" else 4
    assert (error.line, error.field) == (line, "item_id")
    assert f"item id 5 repeated (first on line {line - 2})" in str(error)


def test_format_from_the_file_name() -> None:
    assert items_format_for("data/ml-100k/u.item") == "u.item"
    assert items_format_for("ml-1m/movies.dat") == "movies.dat"
    assert items_format_for("ml-25m/movies.csv") == "movies.csv"
    assert items_format_for("ml-100k.item") == "recbole-item"
    with pytest.raises(ValueError, match="cannot tell"):
        items_format_for("movies.txt")
    with pytest.raises(ValueError, match="unknown movie file format"):
        read_items("movies.csv", "movies.json")


def test_embedded_ml100k_items(base_config) -> None:
    path, fmt = item_source(base_config)
    assert (path.name, fmt) == ("ml-100k.item", "recbole-item")
    frame = read_items(path, fmt)
    assert len(frame) == 1682
    assert sorted(frame["item_id"]) == list(range(1, 1683))
    first = frame.set_index("item_id").loc[1]
    assert (first["title"], first["year"], first["genres"]) == (
        "Toy Story",
        1995,
        ["Animation", "Children's", "Comedy"],
    )
    assert frame["year"].isna().sum() == 1  # item 267, recbole's "unkonwn" placeholder
    assert all(isinstance(genres, list) for genres in frame["genres"])


def test_release_movies_member_is_extracted_and_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = tmp_path / "lake" / "raw"
    raw.mkdir(parents=True)
    archive = raw / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("ml-1m/ratings.dat", "1::1::5::978300760\n")
        bundle.writestr("ml-1m/movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n")
    fetched = []
    monkeypatch.setattr(
        dl, "download_archive", lambda name, raw_dir, base_url=None: fetched.append(name) or archive
    )
    path, fmt = item_source(config_with_lake(tmp_path / "lake", "data.dataset=ml-1m"))
    assert (path, fmt, fetched) == (raw / "ml-1m" / "movies.dat", "movies.dat", ["ml-1m"])
    assert _records(read_items(path, fmt)) == [(1, "Toy Story", 1995, ["Animation", "Children's", "Comedy"])]
    assert dl.extract_ratings(archive, dl.RELEASES["ml-1m"], raw).read_text() == "1::1::5::978300760\n"
    with pytest.raises(dl.DownloadError, match=r"has no member ml-20m/movies\.csv"):
        dl.extract_movies(archive, dl.RELEASES["ml-20m"], raw)


def test_every_release_names_its_movie_file() -> None:
    for release in dl.RELEASES.values():
        assert release.movies_member == f"{release.name}/{items_format_for(release.movies_member)}"
        assert release.movies_format == items_format_for(release.movies_member)
    assert dl.RELEASES["ml-1m"].movies_format == "movies.dat"


def test_synthetic_movies_cover_the_generated_item_ids(tmp_path: Path) -> None:
    from recsys.datasets.synthetic import generate_synthetic

    config = config_with_lake(
        tmp_path / "lake", "data.dataset=synthetic", "data.synthetic_scale=0.002", "data.synthetic_seed=7"
    )
    path, fmt = item_source(config)  # writes movies.csv alone: no ratings yet
    assert (path.name, fmt) == ("movies.csv", "movies.csv")
    assert not path.with_name("ratings.csv").exists()
    items = read_items(path, fmt)
    generated = generate_synthetic(tmp_path / "gen" / "ratings.csv", scale=0.002, seed=7)
    assert (tmp_path / "gen" / "movies.csv").read_bytes() == path.read_bytes()
    rated = set(pd.read_csv(generated.path)["movieId"])
    assert sorted(items["item_id"]) == sorted(rated)
    assert items["year"].notna().all()
    assert all(title.startswith("Synthetic item ") for title in items["title"])
    assert items["genres"].map(len).between(0, 3).all() and items["genres"].map(len).max() == 3
    other = read_items(
        generate_synthetic(tmp_path / "s8" / "ratings.csv", scale=0.002, seed=8).path.with_name("movies.csv")
    )
    assert not other.equals(items)
