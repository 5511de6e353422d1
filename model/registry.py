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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.checkpoint import METRICS_FILE, WEIGHTS_FILE, load_json

if TYPE_CHECKING:
    from recsys.config import Config

PARTIAL_DIR = ".partial"


def training_settings(config: Config) -> dict[str, Any]:
    """The configuration a trained model depends on (the model, its training, its input window)."""
    train = config.train.model_dump(mode="json")
    train.pop("models_dir")
    return {
        "model": config.model.model_dump(mode="json"),
        "train": train,
        "max_seq_len": config.pipeline.max_seq_len,
        "eval_ks": config.scoring.eval_ks,
    }


def training_hash(config: Config) -> str:
    """SHA-256 of :func:`training_settings` (recorded in model_runs as the config hash)."""
    return hashlib.sha256(json.dumps(training_settings(config), sort_keys=True).encode()).hexdigest()


def model_version(config: Config, sequences_fingerprint: str) -> str:
    """The version of ``config``'s model trained on the sequences whose fingerprint is given."""
    key = hashlib.sha256(f"{training_hash(config)}:{sequences_fingerprint}".encode()).hexdigest()
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
