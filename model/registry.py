"""Trained models on disk: one directory per model version, published atomically.

A model version names what the model was trained on and how:
``<model.name>-<sha256(training settings, sequences fingerprint)[:12]>``. Training the same
configuration on the same sequences snapshot gives the same version, so a night whose
sequences did not change reuses the model instead of training again, and a rerun of a date
finds the model its first attempt trained.

A version is trained in ``<models_dir>/.partial/<version>/`` (the trainer's checkpoints live
there, so a killed training resumes) and moved to ``<models_dir>/<version>/`` in one rename
when its artifacts are complete: a version directory is always whole (see
:mod:`model.checkpoint` for the files). Nothing here unpickles.

A warm-started version also names its parent (the champion it started from), so the same
refresh of the same champion on the same snapshot is the same version.

**Champions, as of a date.** The nightly DAG's champion/challenger step records, for each run
date, which version is the champion after that night: ``<models_dir>/champions/<date>.json``.
A night of date D starts from the record of the latest date before D
(:meth:`ModelRegistry.champion_before`), never from "the current champion", so a rerun or a
backfill of D starts from the champion D started from the first time and reproduces its tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.checkpoint import METRICS_FILE, WEIGHTS_FILE, load_json, save_json

if TYPE_CHECKING:
    from recsys.config import Config

PARTIAL_DIR = ".partial"
CHAMPIONS_DIR = "champions"


def training_settings(config: Config) -> dict[str, Any]:
    """The configuration a trained model depends on (the model, its training, its input window)."""
    train = config.train.model_dump(mode="json")
    train.pop("models_dir")
    return {
        "model": config.model.model_dump(mode="json"),
        "train": train,
        "max_seq_len": config.pipeline.max_seq_len,  # the history kept (the window: model.max_seq_len)
        "eval_ks": config.scoring.eval_ks,
    }


def training_hash(config: Config) -> str:
    """SHA-256 of :func:`training_settings` (recorded in model_runs as the config hash)."""
    return hashlib.sha256(json.dumps(training_settings(config), sort_keys=True).encode()).hexdigest()


def model_version(config: Config, sequences_fingerprint: str, parent: str | None = None) -> str:
    """The version of ``config``'s model trained on the sequences whose fingerprint is given.

    ``parent``: the version a warm start began from (None for a training from scratch).
    """
    seed = f"{training_hash(config)}:{sequences_fingerprint}" + (f":warm:{parent}" if parent else "")
    key = hashlib.sha256(seed.encode()).hexdigest()
    return f"{config.model.name}-{key[:12]}"


class ModelRegistry:
    """The model versions under one directory (``train.models_dir``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def from_config(cls, config: Config) -> ModelRegistry:
        return cls(config.project_path(config.train.models_dir))

    def path(self, version: str) -> Path:
        return self.root / version

    def work_dir(self, version: str) -> Path:
        """Where ``version`` is trained before it is published."""
        return self.root / PARTIAL_DIR / version

    def has(self, version: str) -> bool:
        directory = self.path(version)
        return (directory / WEIGHTS_FILE).is_file() and (directory / METRICS_FILE).is_file()

    def metrics(self, version: str) -> dict[str, Any]:
        if not self.has(version):
            raise FileNotFoundError(f"{self.path(version)}: no trained model {version} in {self.root}")
        return load_json(self.path(version) / METRICS_FILE)

    def publish(self, version: str) -> Path:
        """Move the finished ``work_dir(version)`` into place (replacing an older copy)."""
        source, target = self.work_dir(version), self.path(version)
        if not (source / WEIGHTS_FILE).is_file() or not (source / METRICS_FILE).is_file():
            raise FileNotFoundError(f"{source}: training of {version} has not finished")
        if target.exists():
            shutil.rmtree(target)
        os.replace(source, target)
        return target

    def champion_path(self, run_date: dt.date) -> Path:
        return self.root / CHAMPIONS_DIR / f"{run_date.isoformat()}.json"

    def champion_dates(self) -> list[dt.date]:
        """The nights with a champion record, in order."""
        directory = self.root / CHAMPIONS_DIR
        return sorted(
            dt.date.fromisoformat(path.stem)
            for path in (directory.glob("*.json") if directory.is_dir() else [])
        )

    def champion_before(self, run_date: dt.date) -> dict[str, Any] | None:
        """The champion record of the latest night before ``run_date`` (None before the first)."""
        dates = [day for day in self.champion_dates() if day < run_date]
        if not dates:
            return None
        record = load_json(self.champion_path(dates[-1]))
        if not self.has(record["version"]):
            raise FileNotFoundError(
                f"{self.champion_path(dates[-1])}: champion {record['version']} is not in {self.root}"
            )
        return record

    def record_champion(self, run_date: dt.date, record: dict[str, Any]) -> Path:
        """Write (atomically, replacing a rerun's) the champion after the night of ``run_date``."""
        if not self.has(record["version"]):
            raise FileNotFoundError(f"champion {record['version']}: no trained model in {self.root}")
        path = self.champion_path(run_date)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_json(record, path)
        return path
