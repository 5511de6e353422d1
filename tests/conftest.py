"""Shared fixtures: a loaded config and one local SparkSession (Delta enabled) per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.config import Config, load_config


@pytest.fixture(scope="session")
def base_config() -> Config:
    """The local profile with no environment overrides."""
    return load_config(profile="local", env={})


def config_with_lake(lake: Path, *overrides: str) -> Config:
    """The local profile with its lake (and raw data) under ``lake``."""
    return load_config(
        profile="local",
        env={},
        overrides=(f"lake.root={lake}", f"data.raw_dir={lake / 'raw'}", *overrides),
    )


@pytest.fixture()
def lake_config(tmp_path: Path) -> Config:
    return config_with_lake(tmp_path / "lake")


@pytest.fixture(scope="session")
def spark(base_config: Config) -> Iterator[object]:
    """A local[2] SparkSession with Delta, one shuffle partition, shared by all tests."""
    from recsys.spark import build_spark

    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--master local[2] pyspark-shell")
    session = build_spark(
        base_config,
        app_name="tests",
        extra_conf={
            "spark.sql.shuffle.partitions": "1",
            "spark.default.parallelism": "2",
            "spark.driver.memory": "2g",
            "spark.ui.enabled": "false",
            "spark.sql.warehouse.dir": "/tmp/recsys-tests-warehouse",
        },
    )
    yield session
    session.stop()
