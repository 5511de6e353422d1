"""What RecBole does to its process, handled in the peer's process (RecBole itself is unmodified).

* ``recbole.model.sequential_recommender`` imports ``sine.py``, which switches autograd anomaly
  detection on for the whole process at import time (3-5x slower training on CPU):
  :func:`sequential_models` imports the package and switches it back off.
* ``Config`` reads every ``--key=value`` of ``sys.argv`` as a setting that overrides
  ``config_dict``: :func:`config` builds it with an empty command line (the peer's own CLI
  flags, or pytest's, never become RecBole settings).
* RecBole's code uses NumPy aliases (``np.float`` ...) that its ``Config`` defines on
  construction: :func:`numpy_aliases` runs that same function where no Config is built.
* The Trainer's SummaryWriter writes under ``./log_tensorboard`` and ``Config`` sets
  ``CUDA_VISIBLE_DEVICES``: the product runs the peer in a scratch working directory of its
  own, one process per run (:mod:`model.recbole_peer`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def empty_command_line() -> Iterator[None]:
    """``sys.argv`` without arguments for the duration (RecBole's ``Config`` parses it)."""
    saved = sys.argv[:]
    sys.argv[1:] = []
    try:
        yield
    finally:
        sys.argv[:] = saved


def sequential_models() -> ModuleType:
    """``recbole.model.sequential_recommender``, with autograd anomaly detection left off."""
    import recbole.model.sequential_recommender as models
    import torch

    # The peer never wants it, whoever imported sine.py first.
    torch.autograd.set_detect_anomaly(False)
    return models


def config(model: Any, dataset: str, config_dict: dict[str, Any]) -> Any:
    """``recbole.config.Config`` from ``config_dict`` only (see the module docstring)."""
    sequential_models()  # RecBole's Config resolves model names through it
    from recbole.config import Config

    with empty_command_line():
        return Config(model=model, dataset=dataset, config_dict=config_dict)


def numpy_aliases() -> None:
    """RecBole's own ``Config.compatibility_settings`` (``np.float = np.float_`` ...), which every
    ``Config`` runs on construction; code that uses RecBole's evaluator without a Config calls it."""
    from recbole.config import Config

    Config.compatibility_settings(None)


def recbole_data_path() -> str:
    """``dataset_example`` inside the installed recbole package (holds ml-100k)."""
    import recbole

    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
