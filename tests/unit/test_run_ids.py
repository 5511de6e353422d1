"""Run ids name attempts: two runs of a date, or two tries of a task, are told apart in the history."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

from recsys.delta import RUN_ID_ENV, run_id_for

DAY = dt.date(2024, 1, 1)


def _clean(monkeypatch):
    for name in ("AIRFLOW_CTX_DAG_RUN_ID", "AIRFLOW_CTX_TRY_NUMBER", RUN_ID_ENV):
        monkeypatch.delenv(name, raising=False)


def test_each_manual_process_is_its_own_attempt(monkeypatch):
    _clean(monkeypatch)
    here = run_id_for(DAY)
    assert here.startswith("manual__2024-01-01__") and len(here) == len("manual__2024-01-01__") + 8
    assert run_id_for(DAY) == here  # one attempt per process
    code = (
        "import datetime as dt; from recsys.delta import run_id_for; print(run_id_for(dt.date(2024, 1, 1)))"
    )
    env = {k: v for k, v in os.environ.items() if k not in (RUN_ID_ENV, "AIRFLOW_CTX_DAG_RUN_ID")}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert other.stdout.strip().startswith("manual__2024-01-01__") and other.stdout.strip() != here


def test_airflow_tries_and_a_given_id(monkeypatch):
    _clean(monkeypatch)
    monkeypatch.setenv(RUN_ID_ENV, "backfill-7")
    assert run_id_for(DAY) == "backfill-7"
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2024-01-01T00:00:00+00:00")
    assert run_id_for(DAY) == "scheduled__2024-01-01T00:00:00+00:00"
    monkeypatch.setenv("AIRFLOW_CTX_TRY_NUMBER", "2")
    assert run_id_for(DAY) == "scheduled__2024-01-01T00:00:00+00:00__try2"
