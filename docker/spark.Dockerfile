# Spark image: the standalone master and worker of docker/compose.yaml (spark-class of the pinned
# pyspark wheel, JRE 17), and a self-contained job image (`python -m spark_jobs.<job>`, on local[*]
# or whatever master spark-submit names). The executors run the project's Python code, so the
# image installs the project with its locked dependencies; the Delta jars are resolved at build
# time into $RECSYS_HOME/.cache/ivy (spark.jars_cache), readable by the non-root user.
# Build from the repository root:
#   docker build -f docker/spark.Dockerfile -t ghcr.io/movielens-recsys/spark:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RECSYS_HOME=/opt/recsys \
    RECSYS_PROFILE=cluster \
    SPARK_HOME=/usr/local/lib/python3.11/site-packages/pyspark \
    SPARK_WORKER_DIR=/tmp/spark-worker

# The user recsys is uid 50000 with group root, as Airflow's image user is: the lake volume
# (mount point /lake, created here) is written by the driver in the Airflow containers and by the
# executors here. Under the runner `local` the driver tells the executors to start its own
# interpreter's path (spark.pyspark.python = its sys.executable: Airflow's image keeps Python in
# /usr/python/bin), so that path leads to this image's Python too.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 50000 --gid 0 --create-home --shell /bin/bash recsys \
    && install -d -o recsys -g root /lake \
    && mkdir -p /usr/python/bin \
    && ln -s /usr/local/bin/python3.11 /usr/python/bin/python3.11 \
    && ln -s /usr/local/bin/python3.11 /usr/python/bin/python3 \
    && ln -s /usr/local/bin/python3.11 /usr/python/bin/python

WORKDIR /opt/recsys
COPY pyproject.toml requirements.lock ./
# The locked dependencies first, in a layer that changes only with pyproject.toml or the lock.
RUN pip install pip==25.3 \
    && mkdir recsys && touch recsys/__init__.py \
    && pip install -c requirements.lock . \
    && pip uninstall -y movielens-recsys \
    && rm -rf recsys build ./*.egg-info

COPY recsys ./recsys
COPY spark_jobs ./spark_jobs
COPY model ./model
COPY expectations ./expectations
COPY orchestration ./orchestration
COPY dags ./dags
COPY configs ./configs
COPY docs/sql ./docs/sql
# recbole without its dependencies, for the embedded ML-100K file only (never imported; RecBole
# itself runs in its own environment, peers/recbole, outside the images).
RUN pip install --no-deps . \
    && pip install --no-deps recbole==1.2.1 \
    && rm -rf build ./*.egg-info \
    && python -m recsys.spark --resolve-jars

USER 50000
# The master comes from spark-submit (or the cluster launcher), never from the image; compose
# starts the master and worker with spark-class as their entrypoint.
ENTRYPOINT ["python", "-m"]
CMD ["spark_jobs.pipeline", "--help"]
