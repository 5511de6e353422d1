"""model/recbole_compat.py: RecBole 1.2.1 imports and runs on numpy 2 / torch 2.15 without ray/tensorboard."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import pytest

from model.recbole_compat import SHIMS, applied_shims, import_recbole, trust_recbole_checkpoint

# Users with at most 40 ratings: 305 users / 8,390 interactions of ML-100K, so one epoch of a
# small SASRec takes seconds on a busy 2-core CPU while exercising every code path.
SMALL = {
    "user_inter_num_interval": "[0,40]",
    "MAX_ITEM_LIST_LENGTH": 20,
    "hidden_size": 32,
    "inner_size": 64,
    "n_layers": 1,
    "n_heads": 1,
    "train_batch_size": 2048,
    "eval_batch_size": 4096,
    "epochs": 1,
    "train_neg_sample_args": None,
    "loss_type": "CE",
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "metrics": ["Hit", "NDCG", "MRR"],
    "topk": [5, 10, 20],
    "valid_metric": "NDCG@10",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "use_gpu": False,
    "gpu_id": "",
    "seed": 2020,
    "reproducibility": True,
    "show_progress": False,
}


def test_import_is_idempotent_and_lists_its_shims() -> None:
    first = import_recbole()
    second = import_recbole()
    assert first is second is sys.modules["recbole"]
    assert set(applied_shims()) <= set(SHIMS)
    # Every shim is documented in the module docstring.
    import model.recbole_compat as compat

    for line in ("ray", "tensorboard", "colorama", "NumPy 2", "torch.load", "anomaly", "sys.argv"):
        assert line in compat.__doc__
    import recbole.quick_start  # needs the ray stub when ray is absent
    from recbole.utils.utils import SummaryWriter  # needs the tensorboard stub when absent

    assert callable(recbole.quick_start.run_recbole)
    SummaryWriter("ignored").add_scalar("x", 1.0, 0)


def test_no_process_wide_side_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    import torch

    import_recbole()
    from recbole.config import Config

    # RecBole's sine.py turns on autograd anomaly detection at import; the shim turns it back off.
    assert not torch.is_anomaly_enabled()
    monkeypatch.setattr(sys, "argv", ["prog", "--epochs=99", "--timeout=5"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={**SMALL, "data_path": _data_path(), "checkpoint_dir": "/nonexistent"},
        )
    assert config["epochs"] == 1  # the command line is not read
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    assert config["device"].type == "cpu"
    # NumPy 2 names RecBole relies on exist and mean what RecBole expects.
    assert np.float is np.float64  # type: ignore[attr-defined]
    assert np.dtype(np.long) == np.dtype(np.int64)


def _data_path() -> str:
    recbole = import_recbole()
    return os.path.join(os.path.dirname(recbole.__file__), "dataset_example")


def test_builds_packaged_ml100k() -> None:
    import_recbole()
    from recbole.config import Config
    from recbole.data import create_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={
                "data_path": _data_path(),
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "train_neg_sample_args": None,
                "use_gpu": False,
                "gpu_id": "",
            },
        )
        dataset = create_dataset(config)
    assert dataset.inter_num == 100_000
    assert dataset.user_num == 944  # 943 users + padding
    assert dataset.item_num == 1683  # 1682 items + padding
    assert dataset.time_field == "timestamp"


@pytest.mark.slow
def test_one_epoch_sasrec_trains_evaluates_and_reloads_its_checkpoint(tmp_path) -> None:
    import torch

    import_recbole()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = Config(
            model="SASRec",
            dataset="ml-100k",
            config_dict={**SMALL, "data_path": _data_path(), "checkpoint_dir": str(tmp_path)},
        )
        init_seed(config["seed"], config["reproducibility"])
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        model = SASRec(config, train_data._dataset)
        trainer = Trainer(config, model)
        best_valid_score, best_valid = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        # load_best_model=True: torch.load of the checkpoint RecBole just wrote (weights_only shim).
        test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)

    own_file = trainer.saved_model_file
    assert os.path.isfile(own_file)
    assert not torch.is_anomaly_enabled()
    for result in (best_valid, test_result):
        assert set(result) == {f"{m}@{k}" for m in ("hit", "ndcg", "mrr") for k in (5, 10, 20)}
        for value in result.values():
            assert 0.0 <= value <= 1.0
    assert 0.0 <= best_valid_score <= 1.0
    assert test_result["hit@20"] >= test_result["hit@10"] >= test_result["hit@5"]
    # An untrained model over ~1,600 items would score hit@20 ~ 0.012; one epoch beats that.
    assert test_result["hit@20"] > 0.02

    # A checkpoint RecBole did not write in this process gets torch's safe default and fails ...
    import pickle

    copied = tmp_path / "copied.pth"
    copied.write_bytes(Path(own_file).read_bytes())
    with pytest.raises(pickle.UnpicklingError):
        trainer.resume_checkpoint(str(copied))
    # ... unless the caller vouches for it explicitly.
    trust_recbole_checkpoint(copied)
    trainer.resume_checkpoint(str(copied))
    assert trainer.start_epoch == 1
    # RecBole's own file stops being trusted once it changes after RecBole wrote it.
    stat = os.stat(own_file)
    os.utime(own_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    with pytest.raises(pickle.UnpicklingError):
        trainer.evaluate(test_data, load_best_model=True, model_file=own_file, show_progress=False)


def test_the_colorama_stub_serves_other_importers_too() -> None:
    import_recbole()
    import colorama

    # colorama is not in the tree (requirements.lock): the stub stands in for it.
    assert "Stub installed by model/recbole_compat.py" in (colorama.__doc__ or "")
    # structlog's console renderer (Airflow's logging) reads these at import.
    assert (colorama.Style.RESET_ALL, colorama.Fore.RED, colorama.Back.BLUE) == ("", "", "")
    with pytest.raises(AttributeError):
        colorama.Style.__wrapped__  # noqa: B018 (dunders are not colour codes)
