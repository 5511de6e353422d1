"""PyTorch models: SS4Rec (model.ss4rec) and its state-space layers (model.ssm), baselines, training.

Kept import-free so that importing one submodule does not pull in the others.
"""
