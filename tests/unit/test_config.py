"""Layered configuration: precedence, typing, and errors that name key and source."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest

from recsys.config import (
    CONFIG_DIR,
    PROJECT_ROOT,
    ConfigError,
    add_config_arguments,
    config_from_args,
    load_config,
)


def test_base_and_local_profile_load(base_config):
    assert base_config.profile == "local"
    assert base_config.model.hidden_size == 64
    assert base_config.train.patience == 3  # local.yaml's CPU budget over base.yaml's 10
    assert base_config.scoring.eval_ks == [5, 10, 20]
    # local.yaml overrides base.yaml's Spark settings
    assert base_config.spark.conf["spark.driver.memory"] == "6g"
    assert base_config.table_path("ratings_silver") == str(PROJECT_ROOT / "lake" / "ratings_silver")


def test_cluster_profile_uses_object_store_and_keeps_master_out():
    config = load_config(profile="cluster", env={})
    assert config.profile == "cluster"
    assert config.table_path("recommendations") == "s3a://movielens-recsys/lake/recommendations"
    assert config.device == "cuda"
    assert config.pipeline.kcore == 5
    assert not any(key == "spark.master" for key in config.spark.conf)


def test_precedence_env_over_profile_cli_over_env():
    env = {"RECSYS__TRAIN__LR": "0.01", "RECSYS__TRAIN__BATCH_SIZE": "256"}
    config = load_config(profile="local", env=env, overrides=["train.batch_size=64"])
    assert config.train.lr == pytest.approx(0.01)
    assert config.train.batch_size == 64


def test_env_values_parse_as_yaml():
    config = load_config(env={"RECSYS__SCORING__EVAL_KS": "[1, 2]", "RECSYS__TRAIN__AMP": "false"})
    assert config.scoring.eval_ks == [1, 2]
    assert config.train.amp is False


def test_profile_from_environment_variable():
    assert load_config(env={"RECSYS_PROFILE": "cluster"}).profile == "cluster"


def test_unknown_key_in_profile_names_key_and_file(tmp_path: Path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("train:\n  bacth_size: 12\n")
    with pytest.raises(ConfigError) as info:
        load_config(profile=str(profile), env={})
    message = str(info.value)
    assert f"{profile}: train.bacth_size: unknown key" in message


def test_wrong_type_from_env_names_variable():
    with pytest.raises(ConfigError) as info:
        load_config(env={"RECSYS__TRAIN__BATCH_SIZE": "many"})
    message = str(info.value)
    assert "environment variable RECSYS__TRAIN__BATCH_SIZE: train.batch_size:" in message
    assert "'many'" in message


def test_wrong_type_from_cli_names_flag():
    with pytest.raises(ConfigError, match=r"CLI --set pipeline.kcore=-1: pipeline.kcore"):
        load_config(env={}, overrides=["pipeline.kcore=-1"])


def test_unknown_section_from_cli():
    with pytest.raises(ConfigError, match=r"CLI --set nonsense.key=1: nonsense: unknown key"):
        load_config(env={}, overrides=["nonsense.key=1"])


def test_bad_value_in_base_file_names_base_file(tmp_path: Path):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    base = (CONFIG_DIR / "base.yaml").read_text().replace("dropout: 0.2", "dropout: lots")
    (config_dir / "base.yaml").write_text(base)
    (config_dir / "local.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{config_dir / 'base.yaml'}: model.dropout")):
        load_config(env={}, config_dir=config_dir)


def test_malformed_yaml_and_missing_profile(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(profile=str(broken), env={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(profile="no-such-profile", env={})


def test_cli_override_needs_equals_sign():
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(env={}, overrides=["train.lr"])


def test_config_hash_is_stable_and_sensitive():
    first = load_config(env={})
    assert first.config_hash() == load_config(env={}).config_hash()
    assert first.config_hash() != load_config(env={}, overrides=["train.lr=0.5"]).config_hash()


def test_argparse_integration():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--config", "cluster", "--set", "scoring.top_k=50"])
    config = config_from_args(args)
    assert (config.profile, config.scoring.top_k) == ("cluster", 50)


def test_config_is_immutable(base_config):
    with pytest.raises(Exception, match="frozen"):
        base_config.train.lr = 1.0  # type: ignore[misc]


def test_the_driver_gets_the_class_archive_only_when_it_exists(tmp_path):
    from recsys.spark import DRIVER_JAVA_OPTIONS, driver_conf, submit_args

    archive = tmp_path / "driver.jsa"
    config = load_config(profile="local", env={}, overrides=(f"spark.class_archive={archive}",))
    own = {DRIVER_JAVA_OPTIONS: "-Dfoo=1"}
    assert driver_conf(config, own) == own
    assert DRIVER_JAVA_OPTIONS not in driver_conf(config)
    assert "--driver-java-options" not in submit_args(config)
    archive.write_bytes(b"archive")
    use = f"-XX:SharedArchiveFile={archive} -Xshare:auto"
    assert driver_conf(config, own)[DRIVER_JAVA_OPTIONS] == f"-Dfoo=1 {use}"
    assert driver_conf(config)[DRIVER_JAVA_OPTIONS] == use
    assert driver_conf(config, {"spark.ui.enabled": False}) == {
        "spark.ui.enabled": "false",
        DRIVER_JAVA_OPTIONS: use,
    }
    flags = submit_args(config)
    assert flags[flags.index("--driver-java-options") + 1] == use
    off = load_config(profile="local", env={}, overrides=("spark.class_archive=null",))
    assert DRIVER_JAVA_OPTIONS not in driver_conf(off)


def test_mlflow_is_embedded_under_a_local_lake_and_a_server_in_the_cluster_profile(tmp_path: Path):
    local = load_config(env={}, overrides=[f"lake.root={tmp_path / 'lake'}"])
    assert local.mlflow_tracking_uri() == f"sqlite:///{tmp_path / 'lake' / 'mlflow' / 'mlflow.db'}"
    assert local.mlflow_artifact_location() == f"file://{tmp_path / 'lake' / 'mlflow' / 'artifacts'}"
    cluster = load_config(profile="cluster", env={})
    assert cluster.mlflow_tracking_uri() == "http://mlflow:5000"
    assert cluster.mlflow_artifact_location() is None  # the server keeps its artifacts
    # An object-store lake cannot hold SQLite: the error says to name a tracking server.
    stray = load_config(profile="cluster", env={}, overrides=["mlflow.tracking_uri=null"])
    with pytest.raises(ConfigError, match="give a tracking server"):
        stray.mlflow_tracking_uri()


def test_an_installed_package_finds_configs_under_recsys_home(tmp_path: Path):
    import os
    import shutil
    import subprocess
    import sys

    home = tmp_path / "home"
    shutil.copytree(CONFIG_DIR, home / "configs")
    (home / "configs" / "local.yaml").write_text("lake:\n  root: elsewhere\n")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from recsys.config import load_config; print(load_config().table_path('items'))",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "RECSYS_HOME": str(home)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(home / "elsewhere" / "items")


def test_an_object_store_raw_dir_is_refused_with_what_to_do_not_made_a_local_folder(tmp_path: Path):
    from recsys.datasets import raw_dir, synthetic_path

    cluster = load_config(profile="cluster", env={})
    with pytest.raises(
        ConfigError, match=r"data.raw_dir=s3a://movielens-recsys/raw is not local.*RECSYS__DATA__RAW_DIR"
    ):
        synthetic_path(cluster)
    local = load_config(profile="cluster", env={}, overrides=[f"data.raw_dir=file://{tmp_path}"])
    assert raw_dir(local) == tmp_path


def test_overlays_layer_over_the_profile_under_env_and_cli(tmp_path: Path, monkeypatch):
    first, second = tmp_path / "tuned.yaml", tmp_path / "mine.yaml"
    first.write_text("train:\n  lr: 0.005\n  batch_size: 48\nmodel:\n  hidden_size: 32\n")
    second.write_text("model:\n  hidden_size: 128\n")
    config = load_config(profile="cluster", env={}, overlays=[first, second])
    assert config.profile == "cluster"  # the profile's keys stay unless an overlay sets them
    assert (config.train.lr, config.train.batch_size, config.model.hidden_size) == (0.005, 48, 128)
    # from the environment (first), then the argument's; environment keys and --set win over both
    env = {"RECSYS_OVERLAYS": str(second), "RECSYS__TRAIN__BATCH_SIZE": "16"}
    config = load_config(env=env, overlays=[first], overrides=["train.lr=0.002"])
    assert (config.train.lr, config.train.batch_size, config.model.hidden_size) == (0.002, 16, 32)
    monkeypatch.setenv("RECSYS_OVERLAYS", f"{first}{os.pathsep}{second}")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert config_from_args(parser.parse_args([])).model.hidden_size == 128
    args = parser.parse_args(["--overlay", str(first), "--set", "train.epochs=3"])
    assert (config_from_args(args).model.hidden_size, config_from_args(args).train.epochs) == (32, 3)


def test_a_bad_overlay_is_named(tmp_path: Path):
    overlay = tmp_path / "tuned.yaml"
    overlay.write_text("model:\n  hiden_size: 32\n")
    with pytest.raises(ConfigError, match=re.escape(f"{overlay}: model.hiden_size: unknown key")):
        load_config(env={}, overlays=[overlay])
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(env={"RECSYS_OVERLAYS": str(tmp_path / "missing.yaml")})
