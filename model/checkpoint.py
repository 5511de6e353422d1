"""Files of a training run: weights in safetensors, everything else in JSON, all written atomically.

Nothing here unpickles arbitrary objects: weights load with :func:`safetensors.torch.load_file`
and the resumable training state (model + optimizer + RNG states, plain containers of
tensors and numbers) with ``torch.load(weights_only=True)``. Every write goes to a temporary
file in the same directory and is moved into place with :func:`os.replace`, so a crash
never leaves a half-written file under the final name.

An artifact directory (``artifacts/<run_date>/<model>/``) holds:

- ``model.safetensors``: the best-validation weights;
- ``vocab.json``: the item and user vocabularies (raw MovieLens id <-> index);
- ``config.json``: the resolved configuration of the run, plus ``n_items`` / ``n_users``;
- ``metrics.json``: validation and test metrics, epoch times;
- ``checkpoint/``: the resumable training state (``last.pt``, ``best.safetensors``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoint"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the state dict with no shared storage (safetensors refuses shared tensors)."""
    return {
        name: tensor.detach().to("cpu").clone().contiguous() for name, tensor in model.state_dict().items()
    }


def save_weights(model: nn.Module, path: str | Path) -> None:
    with atomic_path(path) as temporary:
        save_file(weights_of(model), str(temporary))


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``model`` (strict: every key must match)."""
    state = load_file(str(path), device="cpu")
    model.load_state_dict(state, strict=True)


def save_json(payload: Any, path: str | Path) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_training_state(state: dict[str, Any], path: str | Path) -> None:
    """Save a training state made of tensors, numbers, strings, lists and dicts only."""
    with atomic_path(path) as temporary:
        torch.save(state, temporary)


def load_training_state(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def save_artifacts(
    directory: str | Path,
    model: nn.Module,
    vocab: dict[str, Any],
    config: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write the four artifact files of a trained model into ``directory``; returns it."""
    directory = Path(directory)
    save_weights(model, directory / WEIGHTS_FILE)
    save_json(vocab, directory / VOCAB_FILE)
    save_json(config, directory / CONFIG_FILE)
    save_json(metrics, directory / METRICS_FILE)
    return directory
