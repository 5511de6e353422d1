# GPU trainer image: the locked PyTorch (CUDA 13 wheels, torch 2.15.0+cu132) and the mamba-ssm /
# causal-conv1d kernels compiled against it. No JVM: the trainer reads Delta with delta-rs and
# writes Parquet to staging. The kubernetes runner runs `python -m orchestration.model_tasks <step>`
# in it (one GPU); compose has it as the `trainer` service (profile gpu).
# The CUDA toolkit (nvcc) must have the CUDA major version of the torch wheels in
# requirements.lock (torch's extension build refuses another; tests/unit/test_docker.py checks it).
# Build from the repository root (TORCH_CUDA_ARCH_LIST: the GPUs' compute capabilities, 9.0 =
# H100/H200; MAX_JOBS: parallel nvcc jobs, a few GB of memory each):
#   docker build -f docker/trainer.Dockerfile -t ghcr.io/movielens-recsys/trainer:0.1.0 .
FROM nvidia/cuda:13.2.0-devel-ubuntu22.04

ARG TORCH_CUDA_ARCH_LIST="9.0"
ARG MAX_JOBS=8

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    RECSYS_HOME=/opt/recsys \
    RECSYS_PROFILE=cluster \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    MAX_JOBS=${MAX_JOBS} \
    CAUSAL_CONV1D_FORCE_BUILD=TRUE \
    MAMBA_FORCE_BUILD=TRUE

# Python 3.11 from Ubuntu 22.04; the user recsys is uid 50000 with group root, like the other
# images, and owns /lake (the mount point of compose's lake volume).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-dev python3.11-venv build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && useradd --uid 50000 --gid 0 --create-home --shell /bin/bash recsys \
    && install -d -o recsys -g root /lake

WORKDIR /opt/recsys
COPY pyproject.toml requirements.lock ./
# The locked dependencies first (torch among them), in a layer that changes only with
# pyproject.toml or the lock: the project's metadata over an empty package.
RUN pip install pip==25.3 \
    && mkdir recsys && touch recsys/__init__.py \
    && pip install -c requirements.lock . \
    && pip uninstall -y movielens-recsys \
    && rm -rf recsys build ./*.egg-info

# The kernels, built against the installed torch (--no-build-isolation) for TORCH_CUDA_ARCH_LIST:
# both setup.py files append a fixed -gencode list (sm_75 ... sm_121) that would override it, so
# those appends are taken out of the pinned sdists first (and checked gone). Their declared
# dependencies are not all needed (tilelang, quack-kernels and apache-tvm-ffi are optional imports
# of mamba-ssm), so they go in without them and the ones `import mamba_ssm` needs are named:
# einops, and transformers with its dependencies, resolved against the lock.
RUN pip install setuptools==84.2.1 wheel==0.48.0 ninja==1.13.2 packaging==26.3 \
    && pip download --no-deps --no-binary :all: --no-build-isolation -d /tmp/kernels \
        causal-conv1d==1.7.0 mamba-ssm==2.3.2.post1 \
    && tar -xzf /tmp/kernels/causal_conv1d-1.7.0.tar.gz -C /tmp/kernels \
    && tar -xzf /tmp/kernels/mamba_ssm-2.3.2.post1.tar.gz -C /tmp/kernels \
    && sed -i -E 's/cc_flag\.append\("(-gencode|arch=compute_[0-9a-z]+,code=sm_[0-9a-z]+)"\)/pass/' \
        /tmp/kernels/causal_conv1d-1.7.0/setup.py /tmp/kernels/mamba_ssm-2.3.2.post1/setup.py \
    && ! grep -n -e "-gencode" -e "arch=compute" \
        /tmp/kernels/causal_conv1d-1.7.0/setup.py /tmp/kernels/mamba_ssm-2.3.2.post1/setup.py \
    && pip install --no-build-isolation --no-deps \
        /tmp/kernels/causal_conv1d-1.7.0 /tmp/kernels/mamba_ssm-2.3.2.post1 \
    && pip install -c requirements.lock einops==0.8.2 transformers==5.24.0 huggingface-hub==2.4.0 \
        tokenizers==0.23.3 hf-xet==1.8.0 httpx2==2.16.2 httpcore2==2.16.2 regex==2026.11.19 truststore==0.10.5 \
    && rm -rf /tmp/kernels \
    && python -c "import torch, selective_scan_cuda, causal_conv1d_cuda, causal_conv1d, mamba_ssm"

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
    && rm -rf build ./*.egg-info

USER 50000
ENTRYPOINT ["python", "-m"]
CMD ["model.train", "--help"]
