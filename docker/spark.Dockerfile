# Spark job image: PySpark 4.2 + Delta jars resolved at build time + the project's jobs.
# Build from the repository root: docker build -f docker/spark.Dockerfile -t recsys-spark .
FROM eclipse-temurin:17-jre-jammy

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv make \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

WORKDIR /opt/recsys
COPY pyproject.toml requirements.lock ./
COPY recsys ./recsys
COPY spark_jobs ./spark_jobs
COPY expectations ./expectations
COPY configs ./configs
RUN pip install -c requirements.lock . \
    && pip install --no-deps recbole==1.2.1 \
    && python -m recsys.spark --resolve-jars

# The master comes from spark-submit (or the cluster launcher), never from the image.
ENTRYPOINT ["python", "-m"]
CMD ["spark_jobs.pipeline", "--help"]
