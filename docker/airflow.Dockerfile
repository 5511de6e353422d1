# Airflow image: scheduler/api-server/dag-processor with the project's DAGs. Heavy work runs in
# the Spark cluster (spark-submit from here, cluster deploy mode) and the trainer pods; this one
# needs the DAG code, the configuration, the providers and a spark-submit client (JRE + pyspark).
# Build from the repository root: docker build -f docker/airflow.Dockerfile -t recsys-airflow .
FROM apache/airflow:3.3.2-python3.11

USER 0
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
USER 50000

WORKDIR /opt/airflow/recsys
COPY --chown=airflow:root pyproject.toml requirements.lock ./
COPY --chown=airflow:root recsys ./recsys
COPY --chown=airflow:root orchestration ./orchestration
COPY --chown=airflow:root configs ./configs
COPY --chown=airflow:root dags /opt/airflow/dags
# The Spark provider without its pyspark-client dependency (it would replace pyspark).
RUN pip install --no-cache-dir -c requirements.lock --no-deps . \
    && pip install --no-cache-dir -c requirements.lock pyspark==4.2.0 \
        apache-airflow-providers-cncf-kubernetes==10.25.0 apache-airflow-providers-discord==3.12.5 \
    && pip install --no-cache-dir --no-deps apache-airflow-providers-apache-spark==6.3.4

ENV RECSYS_PROFILE=cluster
