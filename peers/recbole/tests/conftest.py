"""Every peer test runs in its own working directory: RecBole's Trainer writes ./log_tensorboard."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _scratch_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
