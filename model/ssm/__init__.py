"""State-space layers for SS4Rec: time-aware S5 and selective Mamba (mamba-ssm kernels on CUDA)."""

from model.ssm.mamba import Mamba, mamba_cuda_available
from model.ssm.s5 import S5

__all__ = ["S5", "Mamba", "mamba_cuda_available"]
