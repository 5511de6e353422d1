"""dags/: the DAG files parse fast, light and clean; their structure; the cluster pod; notifications.

Parsing runs in a fresh interpreter (as Airflow's DAG processor does), so what the DAG files
import is measured, not what this test process happened to import before.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from recsys.config import PROJECT_ROOT

PARSE = r"""
import json, sys, time
from pathlib import Path
started = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
# The provider operators are imported first: they are Airflow's cost (the Spark hook alone pulls
# in the Kubernetes clients, ~0.6 s cold), paid once per DAG-processor process; what is timed
# below is the DAG files' own parse.
import airflow.providers.apache.spark.operators.spark_submit
import airflow.providers.standard.operators.bash
imported = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
parsed = time.perf_counter()
out = {
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "airflow_import_seconds": imported - started,
    "parse_seconds": parsed - imported,
    "file_seconds": {Path(s.file).name: s.duration.total_seconds() if hasattr(s.duration, "total_seconds")
                     else float(s.duration) for s in bag.dagbag_stats},
    "heavy": sorted(m for m in ("torch", "pyspark", "pandas", "deltalake", "great_expectations")
                    if m in sys.modules),
    "dags": {},
}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tags": sorted(dag.tags),
        "doc_md": bool(dag.doc_md),
        "params": sorted(dag.params.keys()),
        "tasks": {
            t.task_id: {
                "type": type(t).__name__,
                "downstream": sorted(t.downstream_task_ids),
                "retries": t.retries,
                "backoff": t.retry_exponential_backoff,
                "pool": t.pool,
                "doc": bool(t.doc_md),
                "outlets": [getattr(o, "name", None) for o in t.outlets],
            }
            for t in dag.tasks
        },
        "schedule": repr(getattr(dag.timetable, "asset_condition", dag.timetable)),
    }
print("RESULT" + json.dumps(out))
"""

POD = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
dag = DagBag(dag_folder=sys.argv[1]).dags["recsys_nightly"]
out = {"spark": {}, "python": []}
params = {"model": "ss4rec", "full_retrain": True, "drift_breach": False, "rollback": True,
          "full_rescore": True}
for task in dag.tasks:
    if type(task).__name__ == "SparkSubmitOperator":
        task.render_template_fields({"ds": "1998-04-22", "params": params})
        out["spark"][task.task_id] = {"application": task.application, "args": task.application_args,
                                      "conn_id": task._conn_id}
    elif type(task).__name__ != "KubernetesPodOperator":
        out["python"].append(task.task_id)
for task_id in [t.task_id for t in dag.tasks if type(t).__name__ == "KubernetesPodOperator"]:
    task = dag.get_task(task_id)
    task.render_template_fields({"ds": "1998-04-22", "params": params})
    pod = task.build_pod_request_obj()
    container = pod.spec.containers[0]
    out[task_id] = {
        "type": type(task).__name__,
        "pool": task.pool,
        "namespace": pod.metadata.namespace,
        "image": container.image,
        "command": container.command,
        "args": container.args,
        "limits": container.resources.limits,
        "env": {e.name: e.value for e in container.env},
    }
print("RESULT" + json.dumps(out))
"""


def run_in_airflow(script: str, tmp_path: Path, **env: str) -> dict:
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow_home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(PROJECT_ROOT / "dags")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT"))
    return json.loads(line.removeprefix("RESULT"))


@pytest.fixture(scope="module")
def parsed(tmp_path_factory) -> dict:
    return run_in_airflow(PARSE, tmp_path_factory.mktemp("dagbag"), RECSYS_PROFILE="local")


NIGHTLY_EDGES = {
    "ingest": ["items", "ratings_gate"],
    "ratings_gate": ["silver"],
    "silver": ["drift_input", "sessions"],
    "drift_input": ["train"],
    "sessions": ["sequences"],
    "sequences": ["train"],
    "items": ["publish"],
    "train": ["evaluate"],
    "evaluate": ["champion_challenger"],
    "champion_challenger": ["score"],
    "score": ["publish"],
    "publish": ["drift_output"],
    "drift_output": ["report"],
    "report": ["notify"],
    "notify": [],
}


def test_dag_files_import_cleanly_fast_and_without_heavy_modules(parsed):
    assert parsed["import_errors"] == {}
    assert sorted(parsed["dags"]) == ["recsys_nightly", "recsys_report"]
    # Each file parses in under a second (Airflow's own per-file timing).
    assert sorted(parsed["file_seconds"]) == ["recsys_nightly.py", "recsys_report.py"]
    assert max(parsed["file_seconds"].values()) < 1.0, parsed["file_seconds"]
    assert parsed["heavy"] == []


def test_nightly_structure_tags_params_retries_and_docs(parsed):
    dag = parsed["dags"]["recsys_nightly"]
    assert {task: info["downstream"] for task, info in dag["tasks"].items()} == NIGHTLY_EDGES
    assert {"recsys", "nightly"} <= set(dag["tags"]) and dag["doc_md"]
    assert dag["params"] == ["drift_breach", "full_rescore", "full_retrain", "model", "rollback"]
    for task_id, info in dag["tasks"].items():
        assert info["retries"] >= 1 and info["backoff"], task_id
        assert info["doc"], task_id
    spark = [t for t, info in dag["tasks"].items() if info["type"] == "SparkSubmitOperator"]
    assert sorted(spark) == sorted(
        [
            "ingest",
            "ratings_gate",
            "silver",
            "drift_input",
            "sessions",
            "sequences",
            "items",
            "publish",
            "drift_output",
        ]
    )
    gpu = sorted(t for t, info in dag["tasks"].items() if info["pool"] == "gpu")
    assert gpu == ["evaluate", "score", "train"]
    assert dag["tasks"]["notify"]["outlets"] == ["recsys.recommendations"]


def test_the_report_dag_is_scheduled_on_the_recommendations_asset(parsed):
    report = parsed["dags"]["recsys_report"]
    assert "name='recsys.recommendations'" in report["schedule"]
    assert list(report["tasks"]) == ["coverage_and_churn"]


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: test, user: {token: not-a-secret}}]
contexts: [{name: test, context: {cluster: test, user: test, namespace: recsys}}]
current-context: test
"""


def test_cluster_profile_renders_gpu_pods_of_the_trainer_image(tmp_path):
    # The pod request is built offline: a kubeconfig naming an unreachable API server suffices.
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    # A tuned model's overlay the DAG was parsed with reaches every task's process.
    overlay = tmp_path / "tuned.yaml"
    overlay.write_text("model:\n  hidden_size: 32\n")
    pods = run_in_airflow(
        POD,
        tmp_path,
        RECSYS_PROFILE="cluster",
        RECSYS_OVERLAYS=str(overlay),
        KUBECONFIG=str(tmp_path / "kubeconfig"),
    )
    train = pods["train"]
    assert train["type"] == "KubernetesPodOperator" and train["pool"] == "gpu"
    assert train["namespace"] == "recsys"
    assert train["image"] == "ghcr.io/movielens-recsys/trainer:0.1.0"
    assert train["command"] == ["python", "-m"]
    assert train["args"][:4] == ["orchestration.model_tasks", "train", "--run-date", "1998-04-22"]
    assert "--full-retrain" in train["args"] and "model.name=ss4rec" in train["args"]
    assert train["limits"]["nvidia.com/gpu"] == "1"
    assert train["env"]["RECSYS_PROFILE"] == "cluster"
    assert pods["score"]["limits"]["nvidia.com/gpu"] == "1"
    # The decision needs no GPU: its pod asks for none and it stays out of the gpu pool.
    assert "nvidia.com/gpu" not in pods["champion_challenger"]["limits"]
    assert pods["champion_challenger"]["pool"] != "gpu"
    assert pods["champion_challenger"]["args"][:2] == ["orchestration.model_tasks", "decide"]
    assert "--rollback" in pods["champion_challenger"]["args"] and "--rollback" not in train["args"]
    assert "--full-rescore" in pods["score"]["args"] and "--full-rescore" not in train["args"]
    # Every task renders: the model steps as pods of the trainer image, the Spark stages as
    # spark-submit of the image's job files for the run date, the rest in the Airflow worker.
    assert set(pods) - {"spark", "python"} == {"train", "evaluate", "champion_challenger", "score"}
    for task_id in ("train", "evaluate", "champion_challenger", "score"):
        assert (
            pods[task_id]["image"] == train["image"] and pods[task_id]["env"]["RECSYS_PROFILE"] == "cluster"
        )
        assert pods[task_id]["env"]["RECSYS_OVERLAYS"] == str(overlay)
        assert pods[task_id]["args"][1:4] == [
            task_id.replace("champion_challenger", "decide"),
            "--run-date",
            "1998-04-22",
        ]
    assert len(pods["spark"]) == 9 and sorted(pods["python"]) == ["notify", "report"]
    for task_id, stage in pods["spark"].items():
        assert stage["conn_id"] == "spark_recsys", task_id
        assert stage["application"].startswith("local:///opt/recsys/spark_jobs/"), task_id
        assert stage["args"][stage["args"].index("--run-date") + 1] == "1998-04-22", task_id
    assert pods["spark"]["ingest"]["application"] == "local:///opt/recsys/spark_jobs/ingest.py"


class _Webhook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(monkeypatch, tmp_path):
    _Webhook.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    connection = {
        "conn_type": "discord",
        "host": f"http://127.0.0.1:{server.server_port}",
        "extra": {"webhook_endpoint": "webhooks/1/local-test"},
    }
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow_home"))
    monkeypatch.setenv("AIRFLOW_CONN_RECSYS_WEBHOOK", json.dumps(connection))
    monkeypatch.setenv("RECSYS__ORCHESTRATION__NOTIFY_CONN_ID", "recsys_webhook")
    yield _Webhook.received
    server.shutdown()


def test_failure_and_promotion_notifications_post_to_the_webhook(webhook):
    from orchestration.operators import dag_config, failure_notifier, webhook_notifier

    config = dag_config()

    class TaskInstance:
        task_id, dag_id, try_number = "ratings_gate", "recsys_nightly", 2

    failure_notifier(config)(
        {"ti": TaskInstance(), "ds": "1998-04-22", "exception": "GateError: drop 1998-04-22"}
    )
    webhook_notifier(config, "promoted {{ ds }}")({"ds": "1998-04-22"})
    assert [path for path, _ in webhook] == ["/webhooks/1/local-test"] * 2
    failure, promotion = (payload["content"] for _, payload in webhook)
    assert failure == (
        "recsys: task ratings_gate of recsys_nightly failed for 1998-04-22 (try 2): "
        "GateError: drop 1998-04-22"
    )
    assert promotion == "promoted 1998-04-22"


def test_without_a_webhook_connection_nothing_is_posted(monkeypatch):
    from orchestration.operators import dag_config, default_args, webhook_notifier

    monkeypatch.delenv("RECSYS__ORCHESTRATION__NOTIFY_CONN_ID", raising=False)
    config = dag_config()
    assert webhook_notifier(config, "x") is None
    assert "on_failure_callback" not in default_args(config)
