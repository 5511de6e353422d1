# Airflow image: scheduler/api-server with the project's DAGs. Heavy work runs in the
# Spark and trainer images; this one only needs the DAG code and the configuration.
# Build from the repository root: docker build -f docker/airflow.Dockerfile -t recsys-airflow .
FROM apache/airflow:3.3.2-python3.11

WORKDIR /opt/airflow/recsys
COPY --chown=airflow:root pyproject.toml requirements.lock ./
COPY --chown=airflow:root recsys ./recsys
COPY --chown=airflow:root configs ./configs
COPY --chown=airflow:root dags /opt/airflow/dags
RUN pip install --no-cache-dir -c requirements.lock --no-deps .

ENV RECSYS_PROFILE=cluster
