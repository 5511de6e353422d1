# MLflow tracking and model-registry server of docker/compose.yaml: the full mlflow of the
# project's client version (mlflow-skinny==3.18.0 in pyproject.toml). The backend store and the
# artifact destination come from the environment or the command line; by default a SQLite file
# and an artifact directory under /mlflow (a volume in compose, owned by the non-root user).
# Build from the repository root:
#   docker build -f docker/mlflow.Dockerfile -t ghcr.io/movielens-recsys/mlflow:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_BACKEND_STORE_URI=sqlite:////mlflow/mlflow.db \
    MLFLOW_ARTIFACTS_DESTINATION=/mlflow/artifacts

COPY requirements.lock /tmp/requirements.lock
# mlflow 3.18.0 requires mlflow-tracing==3.18.0, which is not on PyPI (its latest is 3.17.2).
# mlflow-tracing is a subset of mlflow-skinny's files, and mlflow-skinny==3.18.0 is, so mlflow
# goes in without its dependencies and they are named here: its Requires-Dist on Linux less
# mlflow-tracing, plus psycopg2 for the Postgres backend store; the lock pins what it shares with
# the project.
RUN pip install pip==25.3 \
    && pip install --no-deps mlflow==3.18.0 \
    && pip install -c /tmp/requirements.lock mlflow-skinny==3.18.0 psycopg2-binary==2.9.13 \
        Flask==3.1.3 flask-cors==6.0.5 aiohttp==3.14.5 alembic==1.20.1 cryptography==50.0.2 \
        docker==7.2.0 graphene==3.4 gunicorn==26.2.0 huey==3.5.4 matplotlib==3.11.2 numpy==2.4.6 \
        pandas==2.3.3 pyarrow==26.0.1 scikit-learn==1.9.1 scipy==1.17.1 skops==0.16.0 SQLAlchemy==2.1.9 \
    && rm /tmp/requirements.lock \
    && useradd --uid 50000 --gid 0 --create-home --shell /bin/bash mlflow \
    && install -d -o mlflow -g root /mlflow /mlflow/artifacts

USER 50000
WORKDIR /mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--serve-artifacts", "--host", "0.0.0.0", "--port", "5000"]
