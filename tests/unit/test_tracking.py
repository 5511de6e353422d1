"""model/tracking.py: a trained version is an MLflow run and a registered, pickle-free pyfunc model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from model.checkpoint import METRICS_FILE, WEIGHTS_FILE, load_json, save_json
from model.data import read_as_of
from model.registry import ModelRegistry
from model.score import score_run
from model.tracking import (
    VERSION_TAG,
    client,
    download_model,
    experiment_id,
    log_model_version,
    move_aliases,
    registered_version,
)
from recsys.staging import RECOMMENDATIONS_FILE
from tests.scoring_fixtures import DAY, EVENTS, ITEMS, save_model, scoring_config, write_lake

HISTORY = [
    {
        "epoch": e,
        "loss": loss,
        "train_seconds": 1.0,
        "valid_seconds": 0.5,
        "valid": {"ndcg@10": ndcg, "hr@10": 0.3},
    }
    for e, loss, ndcg in ((0, 2.5, 0.1), (1, 2.0, 0.2))
]


@pytest.fixture
def trained(tmp_path: Path):
    config = scoring_config(tmp_path, "scoring.top_k=3")
    write_lake(config, EVENTS, max_seq_len=5)
    version = save_model(config, ITEMS)
    directory = ModelRegistry.from_config(config).path(version)
    save_json(
        {**load_json(directory / METRICS_FILE), "history": HISTORY, "best_epoch": 1}, directory / METRICS_FILE
    )
    return config, version, directory


def test_a_version_is_logged_once_with_its_config_curve_inputs_and_safetensors_artifacts(trained):
    config, version, directory = trained
    registered = log_model_version(
        config, version, directory, DAY, {"sequences": 7}, "warm", parent="ss4rec-0"
    )
    mlflow_client = client(config)
    run = mlflow_client.get_run(registered.run_id)
    assert run.data.params["model.hidden_size"] == "8" and run.data.params["max_seq_len"] == str(
        config.pipeline.max_seq_len
    )
    assert run.data.tags["input.sequences.version"] == "7"
    assert (run.data.tags[VERSION_TAG], run.data.tags["recsys.parent"]) == (version, "ss4rec-0")
    curve = mlflow_client.get_metric_history(registered.run_id, "valid/ndcg_at_10")
    assert [(point.step, point.value) for point in curve] == [(0, 0.1), (1, 0.2)]
    assert run.data.metrics["test/production/ndcg_at_10"] == 0.375
    assert registered.tags[VERSION_TAG] == version and registered.name == config.mlflow.registered_model
    # The model is safetensors + JSON + the code that loads them: nothing pickled.
    with tempfile.TemporaryDirectory() as downloaded:
        mlflow.set_tracking_uri(config.mlflow_tracking_uri())
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=registered.source, dst_path=downloaded))
        files = {path.name for path in root.rglob("*") if path.is_file()}
        assert {WEIGHTS_FILE, "vocab.json", "config.json", "mlflow_model.py", "MLmodel"} <= files
        assert not [name for name in files if name.endswith((".pkl", ".pickle", ".pt", ".pth"))]
        assert "loader_module: mlflow.pyfunc.loaders.code_model" in next(root.rglob("MLmodel")).read_text()
    # A rerun of the night finds the version: no second run, no second registration.
    again = log_model_version(config, version, directory, DAY, {"sequences": 7}, "warm", parent="ss4rec-0")
    assert again.version == registered.version
    assert len(mlflow_client.search_runs([experiment_id(mlflow_client, config)])) == 1
    assert len(mlflow_client.search_model_versions(f"name = '{config.mlflow.registered_model}'")) == 1


def test_the_registered_model_loaded_by_alias_recommends_what_nightly_scoring_does(trained):
    config, version, directory = trained
    log_model_version(config, version, directory, DAY, {"sequences": 0}, "full")
    move_aliases(config, version, None)
    with tempfile.TemporaryDirectory() as downloaded:
        model_dir, uri = download_model(config, version, downloaded)
        assert uri == f"models:/{config.mlflow.registered_model}@champion"
        staged = score_run(config, DAY, version, model_dir=model_dir)
    nightly = pq.read_table(Path(staged.staging) / RECOMMENDATIONS_FILE).to_pandas()
    mlflow.set_tracking_uri(config.mlflow_tracking_uri())
    pyfunc = mlflow.pyfunc.load_model(uri)
    sequences, _ = read_as_of(config.table_path("sequences"), "sequences", DAY)
    served = pyfunc.predict(
        sequences.to_pandas(), params={"k": 3, "query_time": staged.manifest["query_time"]}
    )
    key = ["user_id", "rank"]
    nightly = nightly.sort_values(key, ignore_index=True)
    columns = ["user_id", "rank", "item_id"]
    assert served[columns].values.tolist() == nightly[columns].values.tolist()
    assert served["score"].to_numpy() == pytest.approx(nightly["score"].to_numpy(), rel=1e-5, abs=1e-6)


def test_a_version_not_registered_is_named_and_a_version_off_the_alias_loads_by_number(trained):
    config, version, directory = trained
    with pytest.raises(LookupError, match="ss4rec-nope"):
        move_aliases(config, "ss4rec-nope", None)
    registered = log_model_version(config, version, directory, DAY, {}, "full")
    assert registered_version(client(config), config, "ss4rec-nope") is None
    with tempfile.TemporaryDirectory() as downloaded:  # no alias names it (a backfill's champion)
        model_dir, uri = download_model(config, version, downloaded)
        assert uri == f"models:/{config.mlflow.registered_model}/{registered.version}"
        assert (model_dir / WEIGHTS_FILE).read_bytes() == (directory / WEIGHTS_FILE).read_bytes()
