"""peers/recbole/runtime.py and the in-memory best epoch: what RecBole does to its process, handled here."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
import torch

from peers.recbole.reference import _prepare, _timed_trainer_class, build_config, recbole_metrics
from peers.recbole.runtime import empty_command_line, sequential_models


def test_sequential_models_leave_anomaly_detection_off():
    torch.autograd.set_detect_anomaly(False)
    import recbole.model.sequential_recommender.sine  # noqa: F401  (switched it on when first imported)

    torch.autograd.set_detect_anomaly(True)  # as sine.py does at import time
    models = sequential_models()
    assert hasattr(models, "SASRec")
    assert not torch.is_anomaly_enabled()


def test_config_ignores_the_command_line(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["peer", "--seed=99", "--learning_rate=0.5"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = build_config(seed=7, device="cpu")
    assert config["seed"] == 7 and config["learning_rate"] == 1e-3
    assert sys.argv == ["peer", "--seed=99", "--learning_rate=0.5"]  # restored


def test_empty_command_line_restores_argv_on_error(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["peer", "--x=1"])
    with pytest.raises(RuntimeError), empty_command_line():
        assert sys.argv == ["peer"]
        raise RuntimeError("boom")
    assert sys.argv == ["peer", "--x=1"]


@pytest.mark.slow
def test_best_epoch_is_kept_in_memory_and_no_checkpoint_file_is_written(tmp_path):
    settings = {
        "user_inter_num_interval": "[0,40]",
        "MAX_ITEM_LIST_LENGTH": 10,
        "hidden_size": 16,
        "inner_size": 32,
        "n_layers": 1,
        "n_heads": 1,
        "epochs": 2,
        "train_batch_size": 2048,
        "normalize_all": False,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = build_config(checkpoint_dir=str(tmp_path / "ckpt"), device="cpu", overrides=settings)
        _, train_data, valid_data, _ = _prepare(config)
        model = sequential_models().SASRec(config, train_data._dataset)
        trainer = _timed_trainer_class()(config, model)
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    assert trainer.best_epoch in (0, 1) and trainer.best_state is not None
    kept = {k: v.clone() for k, v in trainer.best_state.items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    trainer.restore_best()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, kept[key])
    assert not any((tmp_path / "ckpt").rglob("*.pth"))


def test_recbole_metrics_on_tie_free_scores_are_hand_computable():
    scores = np.array([[-np.inf, 0.9, 0.5, 0.1], [-np.inf, 0.1, 0.2, 0.3]], dtype=np.float32)
    metrics = recbole_metrics(scores, np.array([2, 3]), ks=(1, 2))
    assert metrics["hr@1"] == pytest.approx(0.5)  # row 2's target is first, row 1's second
    assert metrics["hr@2"] == pytest.approx(1.0)
    assert metrics["mrr@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1.0) / 2)


def test_settings_from_the_product_keep_their_types():
    from peers.recbole.__main__ import setting_value

    assert setting_value("5e-05") == 5e-05 and isinstance(setting_value("5e-05"), float)  # YAML: a string
    assert setting_value('"[0,40]"') == "[0,40]"  # RecBole's interval syntax, a string
    assert setting_value("null") is None and setting_value("true") is True
    assert setting_value("[0,40]") == [0, 40]  # hand-typed
    assert setting_value("gelu") == "gelu"  # hand-typed bare word: YAML


@pytest.mark.parametrize("key", ["checkpoint_dir", "save_dataloaders", "dataset_save_path"])
def test_settings_that_load_pickled_files_are_refused(key):
    with pytest.raises(ValueError, match="pickled"):
        build_config(device="cpu", overrides={key: True})


def test_a_cuda_run_keeps_the_gpus_the_caller_gave_it(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = build_config(device="cuda")
    assert config["gpu_id"] == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"  # RecBole sets it to gpu_id


def test_float32_times_give_no_night_cut():
    from peers.recbole.reference import split_targets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = split_targets(exact_timestamps=False)
    assert len(split["test"]) == 943 and "test_night_known" not in split
