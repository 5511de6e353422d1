"""Baselines with the sequential models' contract: popularity, SASRec, NCF (NeuMF)."""

from model.baselines.ncf import NCF, NCFConfig
from model.baselines.pop import Pop
from model.baselines.sasrec import SASRec, SASRecConfig

__all__ = ["NCF", "NCFConfig", "Pop", "SASRec", "SASRecConfig"]
