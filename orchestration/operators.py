"""Airflow operators for the nightly DAG, built from the profile's configuration.

The DAG files in ``dags/`` say *what* runs in which order; this module says *how*, from
``configs/<profile>.yaml`` (``$RECSYS_PROFILE``, default local), so moving the DAG from this
machine to a cluster is a profile, not an edit of the DAG:

- **Spark stages** (:func:`spark_stage`): ``spark-submit`` of a job file of ``spark_jobs/``
  through the provider's :class:`SparkSubmitOperator`. The Airflow connection
  (``orchestration.spark_conn_id``, given as ``AIRFLOW_CONN_*`` environment by the profile's
  ``configs/airflow/<profile>.env``) decides the master: ``local[2]`` here, a cluster master in
  the cluster profile. The Delta jars, the profile's Spark conf and the driver's class archive
  (:func:`recsys.spark.driver_conf`) go on the command line (the JVM starts before any Python runs).
- **Model steps** (:func:`model_step`): ``python -m orchestration.model_tasks <step>``, either
  as a process of this project's venv (runner ``local``; CPU unless a GPU is visible) or as a
  pod of the trainer image with one GPU (runner ``kubernetes``, KubernetesPodOperator). Training
  and scoring share the 1-slot ``orchestration.gpu_pool``.

Only Airflow and the provider operators are imported here: no torch, pyspark or pandas, so the
DAG parses in well under a second.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from typing import Any

from recsys.config import DEFAULT_PROFILE, OVERLAYS_ENV, PROFILE_ENV, PROJECT_ROOT, Config, load_config

RUN_DATE = "{{ ds }}"


def profile() -> str:
    """The profile the DAG was parsed with (``$RECSYS_PROFILE`` or local)."""
    return os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE


def task_env() -> dict[str, str]:
    """What every task's process gets of the DAG's configuration: the profile, and the overlays
    (``$RECSYS_OVERLAYS``, e.g. a tuned model's) when the DAG was parsed with any. In a pod the
    overlay paths must be readable in the trainer image (under ``$RECSYS_HOME``)."""
    env = {PROFILE_ENV: profile()}
    if os.environ.get(OVERLAYS_ENV):
        env[OVERLAYS_ENV] = os.environ[OVERLAYS_ENV]
    return env


def dag_config() -> Config:
    return load_config(profile=profile())


def recommendations_asset(config: Config):
    """The published recommendations table as an Airflow Asset (one definition for every DAG)."""
    from airflow.sdk import Asset

    location = config.table_path("recommendations")
    return Asset(
        name="recsys.recommendations",
        uri=location if "://" in location else f"file://{location}",
        group="recsys",
    )


def default_args(config: Config) -> dict[str, Any]:
    """Retries with exponential backoff on every task, and the failure notification."""
    orchestration = config.orchestration
    args: dict[str, Any] = {
        "owner": "recsys",
        "retries": orchestration.retries,
        "retry_delay": dt.timedelta(seconds=orchestration.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(seconds=orchestration.max_retry_delay_seconds),
    }
    notifier = failure_notifier(config)
    if notifier is not None:
        args["on_failure_callback"] = [notifier]
    return args


def webhook_notifier(config: Config, text: str):
    """The Discord-style webhook notifier of ``orchestration.notify_conn_id`` (None when unset)."""
    if not config.orchestration.notify_conn_id:
        return None
    from airflow.providers.discord.notifications.discord import DiscordNotifier

    return DiscordNotifier(discord_conn_id=config.orchestration.notify_conn_id, text=text, username="recsys")


def failure_notifier(config: Config):
    return webhook_notifier(
        config,
        "recsys: task {{ ti.task_id }} of {{ ti.dag_id }} failed for {{ ds }} "
        "(try {{ ti.try_number }}): {{ exception | string | truncate(1500) }}",
    )


def _spark_submit_jars(config: Config) -> dict[str, Any]:
    from recsys.spark import cached_jars

    jars = cached_jars(config)
    if jars is not None:
        return {"jars": ",".join(str(jar) for jar in jars)}
    return {
        "packages": config.spark.delta_package,
        "conf": {"spark.jars.ivy": config.project_path(config.spark.jars_cache)},
    }


def _job_command(*args: str) -> list[str]:
    return ["--run-date", RUN_DATE, "--config", profile(), *args]


def spark_stage(config: Config, task_id: str, job: str, *args: str, doc_md: str, **kwargs: Any):
    """spark-submit ``spark_jobs/<job>.py --run-date {{ ds }}`` on the profile's Spark connection."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from recsys.spark import driver_conf

    root = config.orchestration.spark_app_root or str(PROJECT_ROOT)
    jars = _spark_submit_jars(config)
    conf = driver_conf(config)
    conf.update(jars.pop("conf", {}))
    env = task_env()
    if config.orchestration.runner == "local":
        # The driver's Python is this venv's (spark-submit would take python3 from PATH otherwise).
        conf["spark.pyspark.python"] = conf["spark.pyspark.driver.python"] = sys.executable
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id=config.orchestration.spark_conn_id,
        application=f"{root}/spark_jobs/{job}.py",
        application_args=_job_command(*args),
        conf=conf,
        name=f"recsys-{task_id}",
        env_vars=env,
        doc_md=doc_md,
        **jars,
        **kwargs,
    )


def model_command(step: str, *args: str) -> list[str]:
    """The model step's command line after ``python -m``, templated on the run's params."""
    return [
        "orchestration.model_tasks",
        step,
        *_job_command(*args),
        "--set",
        "model.name={{ params.model }}",
    ]


def model_step(config: Config, task_id: str, step: str, *args: str, doc_md: str, gpu: bool, **kwargs: Any):
    """``python -m orchestration.model_tasks <step>`` in the profile's runner (venv or GPU pod)."""
    command = model_command(step, *args)
    pool = {"pool": config.orchestration.gpu_pool} if gpu else {}
    if config.orchestration.runner == "kubernetes":
        return kubernetes_step(config, task_id, command, gpu=gpu, doc_md=doc_md, **pool, **kwargs)
    import shlex

    from airflow.providers.standard.operators.bash import BashOperator

    return BashOperator(
        task_id=task_id,
        bash_command=" ".join([shlex.quote(sys.executable), "-m", *command]),
        cwd=str(PROJECT_ROOT),
        env=task_env(),
        append_env=True,
        doc_md=doc_md,
        **pool,
        **kwargs,
    )


def kubernetes_step(config: Config, task_id: str, command: list[str], gpu: bool, doc_md: str, **kwargs: Any):
    """A pod of the trainer image running ``python -m <command>``, with one GPU when ``gpu``."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    pod = config.orchestration.kubernetes
    limits = {"memory": pod.memory, "cpu": pod.cpu}
    if gpu:
        limits[pod.gpu_resource] = "1"
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"recsys-{task_id.replace('_', '-')}",
        namespace=pod.namespace,
        image=pod.image,
        cmds=["python", "-m"],
        arguments=command,
        env_vars=task_env(),
        container_resources=k8s.V1ResourceRequirements(requests=dict(limits), limits=limits),
        service_account_name=pod.service_account,
        get_logs=True,
        on_finish_action="delete_pod",
        doc_md=doc_md,
        **kwargs,
    )
