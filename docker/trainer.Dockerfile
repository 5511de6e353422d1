# GPU trainer image: CUDA + PyTorch + mamba-ssm/causal-conv1d kernels (built for Hopper, sm_90).
# No JVM: the trainer reads Delta with delta-rs and writes Parquet to staging. The nightly DAG
# runs `python -m orchestration.model_tasks <step>` in it (KubernetesPodOperator, one GPU).
# Build from the repository root: docker build -f docker/trainer.Dockerfile -t recsys-trainer .
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04

ARG TORCH_CUDA_ARCH_LIST="9.0"
ARG MAX_JOBS=16

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    MAX_JOBS=${MAX_JOBS} \
    CAUSAL_CONV1D_FORCE_BUILD=TRUE \
    MAMBA_FORCE_BUILD=TRUE

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev git build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

WORKDIR /opt/recsys
COPY pyproject.toml requirements.lock ./
COPY recsys ./recsys
COPY model ./model
COPY orchestration ./orchestration
COPY configs ./configs
RUN pip install -c requirements.lock . \
    && pip install --no-deps recbole==1.2.1 \
    && pip install --no-build-isolation "causal-conv1d==1.7.0" "mamba-ssm==2.3.2.post1"

ENTRYPOINT ["python", "-m"]
CMD ["model.train", "--help"]
