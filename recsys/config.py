"""Layered configuration: base.yaml -> profile -> overlays -> environment -> CLI, into typed objects.

Every key the system reads is declared in ``configs/base.yaml`` and typed here. Layers
are merged in order, later layers winning:

1. ``configs/base.yaml``
2. a profile: ``configs/<name>.yaml`` (``local`` by default, or ``RECSYS_PROFILE``), or
   any YAML file given by path
3. overlays: YAML files of a few keys each (``--overlay FILE``, repeatable, or
   ``RECSYS_OVERLAYS``, paths separated by ``os.pathsep``; those from the environment come
   first), e.g. the best trial of ``python -m model.tune``
4. environment variables ``RECSYS__SECTION__KEY=value`` (value parsed as YAML, so
   ``RECSYS__TRAIN__LR=0.01`` is a float and ``RECSYS__SCORING__EVAL_KS=[5,10]`` a list)
5. CLI overrides ``--set section.key=value`` (value parsed as YAML)

An unknown key or a value of the wrong type raises :class:`ConfigError`, whose message
names the dotted key and the layer (file path, environment variable or CLI flag) that
set it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

# The project root: configs/ and the anchor of relative paths. A source checkout by default; an
# installed package (the images) names it with RECSYS_HOME.
HOME_ENV = "RECSYS_HOME"
PROJECT_ROOT = Path(os.environ.get(HOME_ENV) or Path(__file__).resolve().parent.parent)
CONFIG_DIR = PROJECT_ROOT / "configs"
ENV_PREFIX = "RECSYS__"
PROFILE_ENV = "RECSYS_PROFILE"
OVERLAYS_ENV = "RECSYS_OVERLAYS"
DEFAULT_PROFILE = "local"

DatasetName = Literal["ml-100k", "ml-latest-small", "ml-1m", "ml-20m", "ml-25m", "ml-32m", "synthetic"]
ModelName = Literal["ss4rec", "ss4rec_s5_only", "ss4rec_mamba_only", "sasrec", "ncf", "pop", "als"]


class ConfigError(ValueError):
    """A configuration layer holds an unknown key, a wrong type or unreadable YAML."""


def _inside_lake(value: str) -> str:
    """A location under ``lake.root``: relative, and never climbing out of it."""
    parts = value.replace("\\", "/").split("/")
    if not value.strip() or "://" in value or value.startswith(("/", "~")) or ".." in parts:
        raise ValueError(
            f"{value!r} must be a relative path inside lake.root (no leading '/', '~', '..' or scheme)"
        )
    return value


#: A table or folder of the lake, joined to ``lake.root``: confined to it.
LakePath = Annotated[str, AfterValidator(_inside_lake)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LakeConfig(_Section):
    root: str


class TablesConfig(_Section):
    ratings_bronze: LakePath
    ratings_quarantine: LakePath
    ratings_silver: LakePath
    sessions: LakePath
    sequences: LakePath
    recommendations: LakePath
    model_runs: LakePath
    items: LakePath
    ratings_run_stats: LakePath
    ratings_drop_stats: LakePath
    ingest_ledger: LakePath
    drift_reports: LakePath
    user_states: LakePath


class SparkConfig(_Section):
    app_name: str
    delta_package: str
    jars_cache: str
    # The driver JVM's class-data sharing archive (relative to the project root), built by
    # `make jars`; used when it exists, null to never use one.
    class_archive: str | None = None
    conf: dict[str, str | bool | int | float] = Field(default_factory=dict)


class DataConfig(_Section):
    dataset: DatasetName
    raw_dir: str
    synthetic_scale: float = Field(gt=0)
    synthetic_seed: int


class PipelineConfig(_Section):
    session_gap_seconds: int = Field(gt=0)
    max_seq_len: int = Field(gt=1)
    kcore: int = Field(ge=0)
    quarantine_max_ratio: float = Field(ge=0, le=1)
    landing_dir: LakePath
    clock_skew_seconds: int = Field(ge=0)
    volume_trailing_drops: int = Field(gt=0)
    volume_min_trailing_drops: int = Field(gt=0)
    volume_min_ratio: float = Field(ge=0)
    volume_max_ratio: float = Field(gt=0)
    retention_days: int = Field(gt=0)
    vacuum_retention_hours: int = Field(ge=0)
    rating_scales: dict[str, tuple[float, float]]
    min_timestamp: int
    validation_dir: LakePath
    export_dir: LakePath


class ModelConfig(_Section):
    name: ModelName
    hidden_size: int = Field(gt=0)
    n_layers: int = Field(gt=0)
    s5_state: int = Field(gt=0)
    dt_min: float = Field(gt=0)
    dt_max: float = Field(gt=0)
    mamba_d_state: int = Field(gt=0)
    mamba_d_conv: int = Field(gt=0)
    mamba_expand: int = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    # The model's input window: its most recent events (pipeline.max_seq_len is the history kept).
    # The default keeps ModelConfigs built directly, as tests do, valid.
    max_seq_len: int = Field(default=200, gt=1)
    # SS4Rec's time scale (docs/time_scale.md): S5 sees gap_seconds / time_unit_seconds, or its
    # log1p with gap_transform log1p (base.yaml's default). The defaults here are the released
    # setting, which a model saved before these keys existed was trained with.
    time_unit_seconds: float = Field(default=1.0, gt=0)
    gap_transform: Literal["linear", "log1p"] = "linear"


class TrainConfig(_Section):
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    epochs: int = Field(gt=0)
    # The default (base.yaml's value) keeps TrainConfigs built directly, as tests do, valid.
    refresh_epochs: int = Field(default=3, gt=0)
    patience: int = Field(gt=0)
    seed: int
    amp: bool
    compile: bool
    models_dir: str


class ScoringConfig(_Section):
    top_k: int = Field(gt=0)
    eval_ks: list[int]
    batch_size: int = Field(gt=0)
    encode_batch_size: int = Field(gt=0)
    fallback_window_days: int = Field(gt=0)
    staging_dir: LakePath
    state_mode: Literal["incremental", "full"]
    state_dtype: Literal["float32", "bfloat16"]


class DriftConfig(_Section):
    reference_days: int = Field(gt=0)
    bins: int = Field(ge=2)
    relative_error: float = Field(ge=0, lt=1)
    min_rows: int = Field(gt=0)
    psi_warn: float = Field(gt=0)
    psi_breach: float = Field(gt=0)
    ks_warn: float = Field(gt=0, le=1)
    ks_breach: float = Field(gt=0, le=1)
    new_users_share_breach: float | None = Field(default=None, gt=0, le=1)
    new_items_share_breach: float | None = Field(default=None, gt=0, le=1)
    overlap_warn: float = Field(ge=0, le=1)
    coverage_warn: float = Field(ge=0, le=1)
    retrain_on_breach: bool


class MlflowConfig(_Section):
    tracking_uri: str | None
    artifact_location: str | None
    experiment: str
    registered_model: str


class KubernetesConfig(_Section):
    namespace: str
    image: str
    service_account: str | None
    gpu_resource: str
    memory: str
    cpu: str


class OrchestrationConfig(_Section):
    runner: Literal["local", "kubernetes"]
    spark_conn_id: str
    spark_app_root: str | None
    gpu_pool: str
    retries: int = Field(ge=0)
    retry_delay_seconds: int = Field(gt=0)
    max_retry_delay_seconds: int = Field(gt=0)
    notify_conn_id: str | None
    full_retrain_every_days: int = Field(ge=0)
    promotion_tolerance: float = Field(ge=0)
    report_trend_nights: int = Field(gt=1)
    kubernetes: KubernetesConfig


class Config(_Section):
    """The whole, validated configuration of one run."""

    profile: str
    device: Literal["auto", "cpu", "cuda"]
    lake: LakeConfig
    tables: TablesConfig
    spark: SparkConfig
    data: DataConfig
    pipeline: PipelineConfig
    model: ModelConfig
    train: TrainConfig
    scoring: ScoringConfig
    drift: DriftConfig
    mlflow: MlflowConfig
    orchestration: OrchestrationConfig

    def table_path(self, table: str) -> str:
        """Location of a Delta table, by its logical name in ``tables``."""
        name = getattr(self.tables, table)
        return join_uri(resolve_location(self.lake.root), name)

    def project_path(self, value: str) -> str:
        """A configured path or URI, with relative paths anchored at the project root."""
        return resolve_location(value)

    def mlflow_tracking_uri(self) -> str:
        """``mlflow.tracking_uri``, or the embedded default: SQLite at ``<lake.root>/mlflow/mlflow.db``."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        root = resolve_location(self.lake.root)
        if is_uri(root) and not root.startswith("file://"):
            raise ConfigError(
                f"mlflow.tracking_uri: the lake is at {root}, where SQLite cannot live; "
                "give a tracking server's URI (the cluster profile does)"
            )
        return "sqlite:///" + join_uri(root.removeprefix("file://"), "mlflow/mlflow.db")

    def mlflow_artifact_location(self) -> str | None:
        """Where new experiments keep their artifacts: ``mlflow.artifact_location``, or
        ``<lake.root>/mlflow/artifacts`` for the embedded store; None leaves it to the server."""
        if self.mlflow.artifact_location:
            return self.mlflow.artifact_location
        if self.mlflow.tracking_uri:
            return None
        root = resolve_location(self.lake.root)
        return join_uri(root if is_uri(root) else f"file://{root}", "mlflow/artifacts")

    def config_hash(self) -> str:
        """Stable SHA-256 of the resolved configuration (recorded with every model run)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def is_uri(value: str) -> bool:
    return "://" in value


def resolve_location(value: str) -> str:
    if is_uri(value) or os.path.isabs(value):
        return value
    return str(PROJECT_ROOT / value)


def join_uri(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def arrow_uri(uri: str) -> str:
    """``uri`` as pyarrow's filesystems name it: Hadoop's ``s3a://`` store is ``s3://`` there."""
    return "s3://" + uri[len("s3a://") :] if uri.startswith("s3a://") else uri


# ---------------------------------------------------------------------------- layers


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: configuration file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(
    target: dict[str, Any],
    layer: Mapping[str, Any],
    source: str,
    provenance: dict[tuple[str, ...], str],
    prefix: tuple[str, ...] = (),
) -> None:
    """Deep-merge ``layer`` into ``target``, recording which source set each key."""
    for key, value in layer.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: key {key!r} under {'.'.join(prefix) or '<top>'} is not a string")
        path = (*prefix, key)
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            provenance.setdefault(path, source)
            _merge(target[key], value, source, provenance, path)
        else:
            target[key] = _plain(value)
            provenance[path] = source
            _record_children(value, source, provenance, path)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _record_children(
    value: Any, source: str, provenance: dict[tuple[str, ...], str], path: tuple[str, ...]
) -> None:
    if isinstance(value, Mapping):
        for key, child in value.items():
            provenance[(*path, str(key))] = source
            _record_children(child, source, provenance, (*path, str(key)))


def _nest(dotted: str, value: Any, source: str) -> dict[str, Any]:
    parts = [p for p in dotted.split(".")]
    if not dotted or any(not p for p in parts):
        raise ConfigError(f"{source}: malformed key {dotted!r}")
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def _parse_scalar(text: str, source: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: value {text!r} is not valid YAML: {exc}") from exc


def _env_layers(env: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    layers = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        source = f"environment variable {name}"
        dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
        layers.append((source, _nest(dotted, _parse_scalar(env[name], source), source)))
    return layers


def _cli_layers(overrides: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    layers = []
    for item in overrides:
        source = f"CLI --set {item}"
        if "=" not in item:
            raise ConfigError(f"{source}: expected section.key=value")
        dotted, text = item.split("=", 1)
        layers.append((source, _nest(dotted.strip(), _parse_scalar(text, source), source)))
    return layers


def _profile_path(profile: str, config_dir: Path) -> tuple[str, Path]:
    if profile.endswith((".yaml", ".yml")) or os.sep in profile:
        path = Path(profile)
        return path.stem, path
    return profile, config_dir / f"{profile}.yaml"


def _source_of(loc: tuple[str | int, ...], provenance: Mapping[tuple[str, ...], str], base: str) -> str:
    keys = tuple(str(part) for part in loc)
    for end in range(len(keys), 0, -1):
        if keys[:end] in provenance:
            return provenance[keys[:end]]
    return base


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    return f"{error['msg']} (got {error.get('input')!r})"


def load_config(
    profile: str | None = None,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    config_dir: Path = CONFIG_DIR,
    overlays: Sequence[str | Path] = (),
) -> Config:
    """Load and validate the layered configuration.

    ``profile`` is a profile name (``configs/<name>.yaml``) or a path to a YAML file;
    ``None`` means ``$RECSYS_PROFILE`` or ``local``. ``overlays`` are YAML files layered over
    the profile, after those named by ``$RECSYS_OVERLAYS``. ``env`` defaults to ``os.environ``.
    """
    env = os.environ if env is None else env
    profile = profile or env.get(PROFILE_ENV) or DEFAULT_PROFILE
    profile_name, profile_file = _profile_path(profile, config_dir)
    base_file = config_dir / "base.yaml"
    overlay_files = [Path(p) for p in env.get(OVERLAYS_ENV, "").split(os.pathsep) if p.strip()]
    overlay_files += [Path(p) for p in overlays]

    merged: dict[str, Any] = {}
    provenance: dict[tuple[str, ...], str] = {}
    layers: list[tuple[str, Mapping[str, Any]]] = [
        (str(base_file), _read_yaml(base_file)),
        (str(profile_file), _read_yaml(profile_file)),
        *((str(path), _read_yaml(path)) for path in overlay_files),
        *_env_layers(env),
        *_cli_layers(overrides),
    ]
    for source, layer in layers:
        if "profile" in layer:
            raise ConfigError(f"{source}: profile: set by the loader, not by a layer")
        _merge(merged, layer, source, provenance)
    merged["profile"] = profile_name

    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            lines.append(f"{_source_of(error['loc'], provenance, str(base_file))}: {key}: {_describe(error)}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--config``, ``--overlay`` and ``--set`` flags every entry point shares."""
    parser.add_argument(
        "--config",
        default=None,
        help="profile name (configs/<name>.yaml) or path to a profile YAML; "
        f"default ${PROFILE_ENV} or '{DEFAULT_PROFILE}'",
    )
    parser.add_argument(
        "--overlay",
        dest="overlays",
        action="append",
        default=[],
        metavar="FILE",
        help=f"a YAML file of keys layered over the profile (repeatable; after ${OVERLAYS_ENV})",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one configuration key (repeatable; value parsed as YAML)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(profile=args.config, overrides=args.overrides, overlays=getattr(args, "overlays", ()))
