"""Shared fixtures: a loaded config and one local SparkSession (Delta enabled) per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.config import PROJECT_ROOT, Config, load_config


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


def spark_submit(
    lake: Path, master: str, script: str | Path, *args: str, java_options: str | None = None
) -> subprocess.CompletedProcess:
    """Run ``script args`` under this venv's spark-submit (Delta jars from the project cache), from
    the project root, with ``--master master``; returns the finished process (output captured).

    ``java_options``: the driver's JVM options instead of those :func:`recsys.spark.submit_args` gives.
    """
    from recsys.spark import submit_args

    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYSPARK_PYTHON=sys.executable)
    flags = submit_args(config_with_lake(lake))
    if java_options is not None:
        if "--driver-java-options" in flags:
            at = flags.index("--driver-java-options")
            del flags[at : at + 2]
        flags += ["--driver-java-options", java_options]
    command = [str(bin_dir / "spark-submit"), *flags, "--master", master]
    return subprocess.run(
        [*command, str(script), *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
