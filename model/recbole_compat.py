"""Make RecBole 1.2.1 importable and runnable on this project's dependency tree.

RecBole is installed with ``pip install --no-deps recbole==1.2.1`` because its own pins
(colorlog==4.7.2, colorama==0.4.4, ray, tensorboard, numpy<2 era code) conflict with the
tree in ``requirements.lock``. Instead of vendoring or forking it, :func:`import_recbole`
applies the small set of shims below, then imports the RecBole modules we use. The function
is idempotent. Shims 1-3 are installed only when the package is missing (installing it later
makes them no-ops), shim 4 only defines names NumPy lacks, and shims 5-8 narrowly change
RecBole behaviour that is wrong for a library living inside a larger process.
:func:`applied_shims` lists what was actually applied.

Shims (each narrow, each with the reason):

1. ``ray`` / ``ray.tune`` stub modules (only if ``import ray`` fails).
   ``recbole/quick_start/quick_start.py`` does ``from ray import tune`` at import time and
   ``recbole/quick_start/__init__.py`` imports that module, so anything that touches
   ``recbole.quick_start`` (including ``recbole.quick_start.load_data_and_model`` and
   ``run_recbole``) dies with ModuleNotFoundError. The only use is ``tune.report`` inside
   RecBole's Ray hyper-parameter search (``objective_function`` with Ray), which we never
   run; the stub ``tune.report`` raises a clear error instead of silently doing nothing.

2. ``torch.utils.tensorboard`` stub (only if importing the real one fails, i.e. the
   ``tensorboard`` package is absent). ``recbole/utils/utils.py`` does
   ``from torch.utils.tensorboard import SummaryWriter`` at import time and every Trainer
   creates a writer in ``__init__``. The stub ``SummaryWriter`` accepts RecBole's calls
   (``add_scalar``, ``add_hparams``, ``close``, ...) and writes nothing (the real one would
   also litter ``./log_tensorboard/`` in the working directory).

3. ``colorama`` stub (only if missing). ``recbole/utils/logger.py`` does
   ``from colorama import init`` and calls ``init(autoreset=True)`` in ``init_logger``;
   on Linux/macOS that call only matters for Windows consoles, so ``init`` is a no-op.
   ``colorlog`` 6.x (installed) keeps the ``ColoredFormatter(fmt, datefmt, log_colors=...)``
   signature that RecBole uses with 4.7.2, so it needs no shim.

4. NumPy 2 removed aliases. ``recbole.config.Configurator.Config.compatibility_settings``
   runs on every ``Config(...)`` and does ``np.float = np.float_`` etc.; ``np.float_``,
   ``np.complex_``, ``np.unicode_`` no longer exist in NumPy 2, so building any Config raises
   AttributeError. RecBole's code itself then uses ``np.float`` (evaluator/metrics.py,
   data/interaction.py, data/dataset/dataset.py), ``np.bool``, ``np.long`` (model layers)
   and ``np.str`` (hyper_tuning). The shim replaces ``compatibility_settings`` with a
   version that sets only the legacy names that are *missing* from the installed NumPy,
   mapped to what NumPy 1.x had them point at via RecBole (``np.float -> np.float64``,
   ``np.int -> np.int_``, ``np.long -> np.int_``, ...). It is process-global, exactly like
   RecBole's own version, but never overwrites a name NumPy 2 still defines
   (``np.bool``, ``np.long`` exist again in NumPy 2 with compatible meaning).

5. ``torch.load`` of RecBole's own checkpoints (torch >= 2.6 defaults to
   ``weights_only=True``). ``Trainer._save_checkpoint`` pickles a dict holding the RecBole
   ``Config`` object (plus enums, optimizer state, ``other_parameter``); ``Trainer.evaluate
   (load_best_model=True)`` and ``Trainer.resume_checkpoint`` then ``torch.load`` that file,
   which the weights-only unpickler rejects. We do NOT flip the global default. Instead:
   ``Trainer._save_checkpoint`` is wrapped to record each file it writes (real path, size,
   mtime_ns), and the name ``torch`` inside ``recbole.trainer.trainer`` only is replaced by a
   proxy whose ``load`` passes ``weights_only=False`` *only* for a file this process just
   wrote through that method and that is unchanged since (or one explicitly passed to
   :func:`trust_recbole_checkpoint`). Every other file — e.g. a ``resume_file`` of unknown
   origin — is loaded with torch's safe default and fails loudly. ``quick_start.
   load_data_and_model`` (arbitrary user files) is deliberately left unpatched.

6. Autograd anomaly detection switched on at import time. ``recbole/model/sequential_recommender/
   sine.py`` runs ``torch.autograd.set_detect_anomaly(True)`` at module level, and it is
   imported by ``recbole.model.sequential_recommender`` (hence by ``get_model`` and by any
   SequentialRecommender import). That turns on NaN checks after every autograd op for the
   whole process: measured 3-5x slower training on CPU for RecBole's SASRec *and* for every
   other model trained in the same process (our SS4Rec included). The shim records the
   anomaly mode before importing RecBole's models and restores it right after (off, by
   default). If something imported those modules before :func:`import_recbole`, the mode
   is switched off and a warning is logged.

7. ``Config`` reads this process's command line. ``Config._load_cmd_line`` parses every
   ``--key=value`` in ``sys.argv`` and gives it precedence over ``config_dict``: under
   pytest (``--timeout=60``), our CLIs (``--seed=2020``) or Airflow, foreign flags would
   silently become RecBole settings. The shim makes it return ``{}``; RecBole is configured
   only through ``config_dict`` / config files by the code in ``model/``.

8. ``Config`` overwrites ``CUDA_VISIBLE_DEVICES``. ``Config._init_device`` does
   ``os.environ["CUDA_VISIBLE_DEVICES"] = gpu_id``, which hides or remaps GPUs for the
   whole process (our own trainer included) if CUDA is not initialised yet. The shim runs
   the original and then restores the variable exactly (value, or absence). RecBole still
   picks ``config["device"]`` (cpu when ``gpu_id`` is empty or CUDA is unavailable, else
   ``cuda``); callers that need a specific device set ``config["device"]`` afterwards.

Checked and deliberately not shimmed: pandas 2.3 warns (FutureWarning) about RecBole's
chained ``feat[field].fillna(..., inplace=True)`` but still fills in place (verified; it stops
working in pandas 3, which this project does not use); ``torch.cuda.amp.GradScaler`` only warns
about its deprecation; ``colorlog`` 6.x needs nothing (above).

Nothing else in RecBole is modified. RecBole's ``init_logger`` writes into ``./log/`` of
the working directory; callers in this project do not call it (see
``model/recbole_reference.py``) and point ``checkpoint_dir`` at a temporary directory.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import types
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["SHIMS", "applied_shims", "import_recbole", "trust_recbole_checkpoint"]

SHIMS = (
    "ray_stub",
    "tensorboard_stub",
    "colorama_stub",
    "numpy_aliases",
    "trainer_checkpoint_load",
    "anomaly_mode_restore",
    "config_ignores_argv",
    "config_keeps_cuda_visible_devices",
)

_lock = threading.RLock()
_applied: list[str] = []
_done = False
# realpath -> (size, mtime_ns) of checkpoints written by RecBole's Trainer in this process,
# or None for files the caller trusted explicitly.
_own_checkpoints: dict[str, tuple[int, int] | None] = {}

# NumPy 1.x names RecBole uses or assigns, mapped like RecBole's compatibility_settings did.
_NUMPY_ALIASES = {
    "bool": "bool_",
    "int": "int_",
    "float": "float64",
    "complex": "complex128",
    "object": "object_",
    "str": "str_",
    "long": "int_",
    "unicode": "str_",
}


def applied_shims() -> list[str]:
    """The shims actually installed in this process (a subset of :data:`SHIMS`)."""
    return list(_applied)


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# --- 1. ray ---------------------------------------------------------------------------


def _install_ray_stub() -> bool:
    if _importable("ray"):
        return False

    def report(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError(
            "ray is not installed: RecBole's Ray-based hyper-parameter search is unavailable "
            "(stub from model/recbole_compat.py)"
        )

    ray = types.ModuleType("ray")
    ray.__doc__ = "Stub installed by model/recbole_compat.py; the real ray is not installed."
    ray.__path__ = []  # make it a package so `import ray.tune` resolves to the stub below
    tune = types.ModuleType("ray.tune")
    tune.report = report  # type: ignore[attr-defined]
    ray.tune = tune  # type: ignore[attr-defined]
    sys.modules["ray"] = ray
    sys.modules["ray.tune"] = tune
    return True


# --- 2. tensorboard ---------------------------------------------------------------------


class _NullSummaryWriter:
    """Accepts every SummaryWriter call RecBole makes and writes nothing."""

    def __init__(self, log_dir: str | None = None, *_args: Any, **_kwargs: Any) -> None:
        self.log_dir = log_dir

    def __getattr__(self, name: str) -> Any:
        if name.startswith("add_") or name in {"flush", "close"}:
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def _install_tensorboard_stub() -> bool:
    if _importable("torch.utils.tensorboard"):
        return False
    # A failed import may leave a half-initialised entry behind.
    sys.modules.pop("torch.utils.tensorboard", None)
    stub = types.ModuleType("torch.utils.tensorboard")
    stub.__doc__ = "Stub installed by model/recbole_compat.py; tensorboard is not installed."
    stub.SummaryWriter = _NullSummaryWriter  # type: ignore[attr-defined]
    sys.modules["torch.utils.tensorboard"] = stub
    return True


# --- 3. colorama -------------------------------------------------------------------------


class _NoColour:
    """colorama's Fore/Back/Style with every code empty."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return ""


def _install_colorama_stub() -> bool:
    if _importable("colorama"):
        return False
    stub = types.ModuleType("colorama")
    stub.__doc__ = "Stub installed by model/recbole_compat.py; init() only matters on Windows consoles."
    stub.init = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    stub.deinit = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    # Other importers of colorama in the same process (structlog's console renderer, which
    # Airflow's logging uses) read colour codes from Fore/Back/Style: they get no colour.
    stub.Fore = stub.Back = stub.Style = _NoColour()  # type: ignore[attr-defined]
    sys.modules["colorama"] = stub
    return True


# --- 4. numpy aliases --------------------------------------------------------------------


def _set_numpy_aliases() -> None:
    import numpy as np

    for legacy, target in _NUMPY_ALIASES.items():
        # vars(), not getattr(): NumPy's module __getattr__ warns/raises for expired names.
        if legacy not in vars(np):
            setattr(np, legacy, getattr(np, target))


def _patch_numpy_aliases() -> bool:
    from recbole.config import configurator

    config_cls = configurator.Config
    if getattr(config_cls.compatibility_settings, "_recsys_shim", False):
        return False

    def compatibility_settings(self: Any) -> None:
        _set_numpy_aliases()

    compatibility_settings._recsys_shim = True  # type: ignore[attr-defined]
    config_cls.compatibility_settings = compatibility_settings
    # Metrics/dataset code may run before any Config is built in exotic call orders.
    _set_numpy_aliases()
    return True


# --- 7./8. Config side effects ----------------------------------------------------------


def _patch_config_side_effects() -> list[str]:
    from recbole.config import configurator

    config_cls = configurator.Config
    applied = []
    if not getattr(config_cls._load_cmd_line, "_recsys_shim", False):

        def _load_cmd_line(self: Any) -> dict[str, Any]:
            return {}

        _load_cmd_line._recsys_shim = True  # type: ignore[attr-defined]
        config_cls._load_cmd_line = _load_cmd_line
        applied.append("config_ignores_argv")
    if not getattr(config_cls._init_device, "_recsys_shim", False):
        original_init_device = config_cls._init_device

        def _init_device(self: Any) -> None:
            before = os.environ.get("CUDA_VISIBLE_DEVICES")
            try:
                original_init_device(self)
            finally:
                if before is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = before

        _init_device._recsys_shim = True  # type: ignore[attr-defined]
        config_cls._init_device = _init_device
        applied.append("config_keeps_cuda_visible_devices")
    return applied


# --- 5. torch.load of RecBole's own checkpoints -----------------------------------------


def _fingerprint(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def trust_recbole_checkpoint(path: str | os.PathLike[str]) -> None:
    """Allow RecBole's trainer to fully unpickle ``path`` (a checkpoint you know is RecBole's).

    Only needed for checkpoints written by another process (e.g. ``resume_checkpoint``).
    Unpickling runs arbitrary code: never pass a file of unknown origin.
    """
    with _lock:
        _own_checkpoints[os.path.realpath(path)] = None


def _is_own_checkpoint(f: Any) -> bool:
    if not isinstance(f, (str, os.PathLike)):
        return False
    real = os.path.realpath(f)
    with _lock:
        if real not in _own_checkpoints:
            return False
        recorded = _own_checkpoints[real]
    if recorded is None:
        return True
    try:
        return _fingerprint(real) == recorded
    except OSError:
        return False


class _TrainerTorch(types.ModuleType):
    """``torch`` as seen by ``recbole.trainer.trainer``: identical except ``load``."""

    def __init__(self, torch_module: types.ModuleType) -> None:
        super().__init__("torch")
        self.__dict__["_torch"] = torch_module

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_torch"], name)

    def load(self, f: Any, *args: Any, **kwargs: Any) -> Any:
        torch = self.__dict__["_torch"]
        if "weights_only" not in kwargs and _is_own_checkpoint(f):
            # A checkpoint RecBole's Trainer wrote in this process a moment ago (see shim 5).
            kwargs["weights_only"] = False
        return torch.load(f, *args, **kwargs)


def _patch_trainer_checkpoints() -> bool:
    import torch
    from recbole.trainer import trainer as trainer_mod

    if isinstance(trainer_mod.__dict__.get("torch"), _TrainerTorch):
        return False
    trainer_mod.torch = _TrainerTorch(torch)

    original_save = trainer_mod.Trainer._save_checkpoint

    def _save_checkpoint(self: Any, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
        path = kwargs.get("saved_model_file", self.saved_model_file)
        original_save(self, epoch, verbose=verbose, **kwargs)
        if path is not None and Path(path).is_file():
            with _lock:
                _own_checkpoints[os.path.realpath(path)] = _fingerprint(path)

    _save_checkpoint.__doc__ = original_save.__doc__
    trainer_mod.Trainer._save_checkpoint = _save_checkpoint
    return True


# --- entry point -------------------------------------------------------------------------


def import_recbole() -> types.ModuleType:
    """Apply the shims (once) and import RecBole; returns the ``recbole`` package.

    After this call ``recbole.config``, ``recbole.data``, ``recbole.model``,
    ``recbole.trainer``, ``recbole.utils`` and ``recbole.quick_start`` are importable.
    """
    global _done
    with _lock:
        if _done:
            return sys.modules["recbole"]
        steps = [
            ("ray_stub", _install_ray_stub),
            ("tensorboard_stub", _install_tensorboard_stub),
            ("colorama_stub", _install_colorama_stub),
        ]
        for name, step in steps:
            if step():
                _applied.append(name)
        import torch

        sine = "recbole.model.sequential_recommender.sine"
        imported_before = sine in sys.modules
        anomaly_before = torch.is_anomaly_enabled() and not imported_before
        anomaly_check_nan = torch.is_anomaly_check_nan_enabled()

        import recbole
        import recbole.config
        import recbole.data
        import recbole.model.sequential_recommender
        import recbole.quick_start
        import recbole.trainer
        import recbole.utils

        if torch.is_anomaly_enabled() != anomaly_before:
            if imported_before:
                log.warning(
                    "recbole was imported before import_recbole(); switching off the autograd "
                    "anomaly detection its sine.py turned on"
                )
            torch.autograd.set_detect_anomaly(anomaly_before, check_nan=anomaly_check_nan)
            _applied.append("anomaly_mode_restore")

        if _patch_numpy_aliases():
            _applied.append("numpy_aliases")
        _applied.extend(_patch_config_side_effects())
        if _patch_trainer_checkpoints():
            _applied.append("trainer_checkpoint_load")
        _done = True
        return recbole
