"""Input files are checked before any work starts: missing, compressed, or of another rating scale."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from recsys.config import ConfigError, load_config
from recsys.datasets import check_format, dataset_formats
from recsys.datasets.formats import compressed_file_error, compression_of, read_ratings
from spark_jobs import ingest, pipeline

HEADER = "userId,movieId,rating,timestamp\n"


@pytest.fixture()
def no_spark(monkeypatch):
    """Fail the test if a job starts Spark: the checks must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("Spark was started before the input files were checked")

    monkeypatch.setattr("recsys.spark.build_spark", refuse)


def _main_fails(job, capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exited:
        job.main(["--run-date", "2024-01-01", *argv])
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("job", [ingest, pipeline], ids=["ingest", "pipeline"])
def test_a_missing_input_file_is_named_before_spark_starts(job, tmp_path, capsys, no_spark):
    missing = tmp_path / "nope" / "u.data"
    err = _main_fails(job, capsys, "--input", str(missing), "--format", "u.data")
    assert f"--input {missing}: no such file" in err
    err = _main_fails(job, capsys, "--input", str(tmp_path), "--format", "u.data")
    assert f"--input {tmp_path}: is a directory" in err


def test_a_compressed_input_file_is_named_before_spark_starts(tmp_path, capsys, no_spark):
    path = tmp_path / "ratings.csv"
    with gzip.open(path, "wt") as handle:
        handle.write(HEADER + "1,10,4.0,1700000000\n")
    err = _main_fails(
        pipeline, capsys, "--input", str(path), "--format", "ratings.csv", "--set", "data.dataset=synthetic"
    )
    assert f"{path}: looks gzip-compressed (it starts with the bytes 1f 8b)" in err
    assert err.count(str(path)) == 1  # once, and no bytes of it
    with pytest.raises(ValueError, match="looks gzip-compressed"):
        read_ratings(path)  # the local reader says the same


def test_an_input_format_of_another_rating_scale_is_refused_before_spark_starts(tmp_path, capsys, no_spark):
    path = tmp_path / "ratings.csv"
    path.write_text(HEADER + "1,10,0.5,1700000000\n")
    err = _main_fails(pipeline, capsys, "--input", str(path), "--format", "ratings.csv")  # ml-100k, 1-5
    assert "a ratings.csv file, but data.dataset=ml-100k (ratings 1-5)" in err
    assert "--set data.dataset=ml-latest-small" in err


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"BZh91AY", "bzip2"),
        (b"PK\x03\x04\x14", "zip"),
        (b"\x28\xb5\x2f\xfd\x00", "zstd"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"userId,movieId", None),
        (b"1\t10\t4\t8812", None),
        (b"", None),
    ],
)
def test_compression_is_told_by_the_leading_bytes(head, kind):
    assert compression_of(head) == kind
    assert (compressed_file_error("f.csv", head) is None) == (kind is None)


def test_each_dataset_accepts_its_formats_and_those_of_its_scale():
    config = load_config(profile="local", env={})  # ml-100k: 1-5
    assert dataset_formats("ml-100k") == ("u.data", "recbole-inter")
    assert dataset_formats("ml-25m") == ("ratings.csv", "recbole-inter")
    for fmt in ("u.data", "recbole-inter", "ratings.dat"):  # ratings.dat: ml-1m, also 1-5
        check_format(config, fmt, "f")
    with pytest.raises(ConfigError, match=r"^f\.csv: a ratings\.csv file, but data\.dataset=ml-100k"):
        check_format(config, "ratings.csv", "f.csv")
    half_stars = load_config(profile="local", env={}, overrides=["data.dataset=ml-25m"])
    check_format(half_stars, "ratings.csv", "f")
    with pytest.raises(ConfigError, match=r"u\.data files come from ml-100k \(ratings 1-5\)"):
        check_format(half_stars, "u.data", "u.data")


def test_the_embedded_file_passes_its_own_checks():
    from recsys.datasets.embedded import ml100k_path

    path = Path(ml100k_path())
    assert compressed_file_error(str(path), path.read_bytes()[:8]) is None
    check_format(load_config(profile="local", env={}), "recbole-inter", str(path))
