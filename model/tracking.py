"""MLflow tracking and registry of the nightly models: runs, registered versions, aliases.

Every model version the nightly train step makes (a full training or a warm-start refresh) is
logged once, from its published artifact directory (:mod:`model.registry`), as an MLflow run of
``mlflow.experiment``:

- **params**: the training settings (:func:`model.registry.training_settings`, flattened);
- **metrics**: per epoch (``step`` = epoch) the training loss, epoch times and the validation
  metrics; then the best weights' validation and test metrics in both variants;
- **tags**: the model version, its parent (a warm start), the run date, the training mode, the
  sequences fingerprint and the input tables' Delta versions (``input.sequences.version``);
- **the model**: a pyfunc model *from code* (:mod:`model.mlflow_model`) whose artifacts are the
  safetensors weights, the vocabularies, the configuration and the metrics. MLflow's PyTorch
  flavor pickles the module and the code-based pyfunc pickles nothing, so loading a model here
  is safetensors and JSON only.

The run's model becomes a version of the registered model ``mlflow.registered_model``, tagged
with the model version (:data:`VERSION_TAG`): logging is idempotent, a rerun of a night finds
the registered version and logs nothing again.

**Aliases.** ``champion`` names the registered version that scores, ``challenger`` the last
challenger that was not promoted (or the version a rollback replaced). The champion/challenger
step moves them (:func:`move_aliases`) for the newest night only: a backfill of a past date
records that date's champion (:mod:`model.registry`) but leaves the aliases where the latest
night put them. Scoring loads the champion by alias (:func:`download_model`) when the alias
names the night's champion, and by its version number otherwise (a backfill), so a rerun of any
date scores with the model that date chose.

Embedded default: SQLite at ``<lake.root>/mlflow/mlflow.db`` with a file artifact store beside it
(:meth:`recsys.config.Config.mlflow_tracking_uri`); the cluster profile names a tracking server.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.checkpoint import CONFIG_FILE, METRICS_FILE, VOCAB_FILE, WEIGHTS_FILE, load_json

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from recsys.config import Config

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
VERSION_TAG = "recsys.model_version"
MODEL_NAME = "model"
MODEL_CODE = Path(__file__).with_name("mlflow_model.py")
ARTIFACT_FILES = {
    "weights": WEIGHTS_FILE,
    "vocab": VOCAB_FILE,
    "config": CONFIG_FILE,
    "metrics": METRICS_FILE,
}
# The pyfunc model's environment: what model.mlflow_model imports, at this tree's pins.
PIP_REQUIREMENTS = ("torch", "safetensors", "numpy", "pandas", "pyarrow", "scipy", "pydantic", "PyYAML")
# MLflow names allow letters, digits, _ - . / space and colon; "ndcg@10" becomes "ndcg_at_10".
_UNSAFE = re.compile(r"[^\w.\-/ :]")


def metric_name(*parts: str) -> str:
    return _UNSAFE.sub("_", "/".join(parts).replace("@", "_at_"))


def client(config: Config) -> MlflowClient:
    """A client of the configured tracking server and registry (the same URI)."""
    from mlflow import MlflowClient

    uri = config.mlflow_tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlflow_client: MlflowClient, config: Config) -> str:
    """The nightly experiment's id, created (with its artifact location) on first use."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(config.mlflow.experiment)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow_client.create_experiment(
            config.mlflow.experiment, artifact_location=config.mlflow_artifact_location()
        )
    except MlflowException:  # created by a concurrent task in between
        return mlflow_client.get_experiment_by_name(config.mlflow.experiment).experiment_id


def registered_version(mlflow_client: MlflowClient, config: Config, version: str) -> ModelVersion | None:
    """The registered version of our model ``version`` (None when it was never logged)."""
    found = mlflow_client.search_model_versions(
        f"name = '{config.mlflow.registered_model}' and tags.`{VERSION_TAG}` = '{version}'"
    )
    # Two registrations of one version (a crash between registering and a rerun): the first wins.
    return min(found, key=lambda entry: int(entry.version)) if found else None


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(_flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return out
    return {prefix: str(value)}


def run_metrics(metrics: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(name, value, step) of a saved ``metrics.json``: the training curve, then the final figures."""
    out: list[tuple[str, float, int]] = []
    for record in metrics.get("history", []):
        step = int(record["epoch"])
        out += [
            ("train/loss", float(record["loss"]), step),
            ("train/epoch_seconds", float(record["train_seconds"]), step),
            ("valid/epoch_seconds", float(record["valid_seconds"]), step),
        ]
        out += [(metric_name("valid", name), float(value), step) for name, value in record["valid"].items()]
    last = len(metrics.get("history", []))
    for split in ("valid", "test"):
        for variant, values in metrics.get(split, {}).items():
            out += [(metric_name(split, variant, name), float(v), last) for name, v in values.items()]
    for key in ("training_seconds", "best_epoch", "epochs_run", "mean_epoch_seconds"):
        if key in metrics:
            out.append((key, float(metrics[key]), last))
    return out


def log_model_version(
    config: Config,
    version: str,
    directory: str | Path,
    run_date: dt.date,
    input_versions: dict[str, int],
    mode: str,
    parent: str | None = None,
    fingerprint: str | None = None,
) -> ModelVersion:
    """Log the trained ``version`` (its artifact ``directory``) as a run and a registered version.

    Idempotent: when the registered model already holds ``version`` nothing is logged again.
    """
    import mlflow
    from mlflow.entities import Metric, Param

    from model.evaluate import run_timestamp
    from model.registry import training_settings

    mlflow_client = client(config)
    existing = registered_version(mlflow_client, config, version)
    if existing is not None:
        log.info("%s is registered already: %s version %s", version, existing.name, existing.version)
        return existing
    directory = Path(directory)
    metrics = load_json(directory / METRICS_FILE)
    tags = {
        VERSION_TAG: version,
        "recsys.run_date": run_date.isoformat(),
        "recsys.training_mode": mode,
        "recsys.parent": parent or "",
        "recsys.sequences_fingerprint": fingerprint or "",
        **{f"input.{table}.version": str(number) for table, number in sorted(input_versions.items())},
    }
    run = mlflow_client.create_run(experiment_id(mlflow_client, config), run_name=version, tags=tags)
    run_id = run.info.run_id
    stamp = run_timestamp(run_date) * 1000  # the night's cut-off, so a metric's time is the data's
    params = [
        Param(key, value[:6000]) for key, value in sorted(_flatten("", training_settings(config)).items())
    ]
    for start in range(0, len(params), 100):
        mlflow_client.log_batch(run_id, params=params[start : start + 100])
    points = [Metric(name, value, stamp, step) for name, value, step in run_metrics(metrics)]
    for start in range(0, len(points), 1000):
        mlflow_client.log_batch(run_id, metrics=points[start : start + 1000])
    # The fluent log_model needs an active run (of this client's tracking URI).
    mlflow.set_tracking_uri(config.mlflow_tracking_uri())
    with mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # The signature is given; an input example would need a model run at logging time.
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(MODEL_CODE),
            artifacts={key: str(directory / name) for key, name in ARTIFACT_FILES.items()},
            pip_requirements=_pinned(PIP_REQUIREMENTS),
            signature=signature(),
        )
    mlflow_client.set_terminated(run_id)
    name = config.mlflow.registered_model
    if not mlflow_client.search_registered_models(f"name = '{name}'"):
        mlflow_client.create_registered_model(name, description="The nightly recommender's models.")
    registered = mlflow_client.create_model_version(
        name, source=info.model_uri, run_id=run_id, tags={VERSION_TAG: version}
    )
    log.info("%s logged as run %s, registered as %s version %s", version, run_id, name, registered.version)
    return registered


def signature():
    """The pyfunc's contract: rows of the sequences table in, each user's top k out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = Schema(
        [
            ColSpec("long", "user_id"),
            ColSpec(Array("long"), "item_ids"),
            ColSpec(Array("long"), "timestamps"),
            ColSpec(Array("integer"), "split"),
        ]
    )
    outputs = Schema(
        [
            ColSpec("long", "user_id"),
            ColSpec("long", "rank"),
            ColSpec("long", "item_id"),
            ColSpec("float", "score"),
        ]
    )
    params = ParamSchema([ParamSpec("k", "long", 100), ParamSpec("query_time", "long", 0)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _pinned(packages: tuple[str, ...]) -> list[str]:
    from importlib.metadata import version

    return [f"{package}=={version(package)}" for package in packages]


def alias_version(mlflow_client: MlflowClient, config: Config, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(config.mlflow.registered_model, alias)
    except MlflowException:
        return None


def move_aliases(config: Config, champion: str, challenger: str | None) -> dict[str, str | None]:
    """Point ``champion`` (and ``challenger``, or remove it when None) at our model versions.

    Returns ``{alias: registered version number}``. The versions must be registered
    (:func:`log_model_version`); a version that never was is an error naming it.
    """
    mlflow_client = client(config)
    name = config.mlflow.registered_model
    moved: dict[str, str | None] = {}
    for alias, version in ((CHAMPION, champion), (CHALLENGER, challenger)):
        if version is None:
            if alias_version(mlflow_client, config, alias) is not None:
                mlflow_client.delete_registered_model_alias(name, alias)
            moved[alias] = None
            continue
        registered = registered_version(mlflow_client, config, version)
        if registered is None:
            raise LookupError(f"{version}: not a version of the registered model {name!r}; train it first")
        mlflow_client.set_registered_model_alias(name, alias, registered.version)
        moved[alias] = str(registered.version)
    log.info("aliases of %s: %s", name, moved)
    return moved


def download_model(config: Config, version: str, destination: str | Path) -> tuple[Path, str]:
    """Download ``version``'s artifacts from the registry; returns (their directory, the model URI).

    By the ``champion`` alias when it names ``version``, else by the registered version number.
    """
    import mlflow

    mlflow_client = client(config)
    name = config.mlflow.registered_model
    registered = registered_version(mlflow_client, config, version)
    if registered is None:
        raise LookupError(f"{version}: not a version of the registered model {name!r}; train it first")
    champion = alias_version(mlflow_client, config, CHAMPION)
    by_alias = champion is not None and champion.version == registered.version
    uri = f"models:/{name}@{CHAMPION}" if by_alias else f"models:/{name}/{registered.version}"
    mlflow.set_tracking_uri(config.mlflow_tracking_uri())
    mlflow.set_registry_uri(config.mlflow_tracking_uri())
    target = Path(destination) / name / str(registered.version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target)))
    log.info("%s loaded from %s (%s)", version, uri, local)
    return local / "artifacts", uri
