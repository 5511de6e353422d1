# Airflow image: the api-server, scheduler, dag-processor and triggerer of docker/compose.yaml.
# The scheduler runs the tasks (LocalExecutor), so the image holds the whole project with its
# locked dependencies: the Spark stages are spark-submit in client mode from here (the driver in
# this container, the executors on the Spark workers), which needs a JRE, pyspark and the Delta
# jars; the model steps run here too under the compose file's runner `local` (CPU).
# The project is installed as a package; its configs/, dags/ and docs/sql/ live in RECSYS_HOME.
# Build from the repository root:
#   docker build -f docker/airflow.Dockerfile -t ghcr.io/movielens-recsys/airflow:0.1.0 .
FROM apache/airflow:slim-3.3.2-python3.11

USER 0
# /lake is the mount point of compose's lake volume: created here, owned by the airflow user, so
# the volume starts out writable by the containers (all of them run as uid 50000).
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o airflow -g root /opt/recsys /lake
USER 50000

ENV RECSYS_HOME=/opt/recsys \
    RECSYS_PROFILE=cluster \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/recsys/dags \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/recsys
COPY --chown=airflow:root pyproject.toml requirements.lock ./
# The locked dependencies first, in a layer that changes only with pyproject.toml or the lock (the
# project's metadata over an empty package), then the Postgres drivers of the metadata database:
# psycopg2 and asyncpg (Airflow 3 opens an async engine too), named here, not left to the base image.
RUN mkdir recsys && touch recsys/__init__.py \
    && pip install -c requirements.lock . psycopg2-binary==2.9.13 asyncpg==0.32.0 \
    && pip uninstall -y movielens-recsys \
    && rm -rf recsys build ./*.egg-info

COPY --chown=airflow:root recsys ./recsys
COPY --chown=airflow:root spark_jobs ./spark_jobs
COPY --chown=airflow:root model ./model
COPY --chown=airflow:root expectations ./expectations
COPY --chown=airflow:root orchestration ./orchestration
COPY --chown=airflow:root dags ./dags
COPY --chown=airflow:root configs ./configs
COPY --chown=airflow:root docs/sql ./docs/sql
# recbole (for the embedded ML-100K file only; never imported) and the Spark provider (its
# pyspark-client would replace pyspark) without their dependencies, as `make venv` does. The
# Delta jars resolve into $RECSYS_HOME/.cache/ivy; both DAG files must parse with the image's
# configuration.
RUN pip install --no-deps . \
    && pip install --no-deps recbole==1.2.1 apache-airflow-providers-apache-spark==6.3.4 \
    && rm -rf build ./*.egg-info \
    && python -m recsys.spark --resolve-jars \
    && python dags/recsys_nightly.py \
    && python dags/recsys_report.py
