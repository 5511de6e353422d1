"""RecBole 1.2.1 as a peer: its reference models, in their own environment (``.venv-recbole``).

RecBole pins packages the product cannot take (colorlog 4.7.2, colorama 0.4.4, ray 2.6, numpy
1.x-era code), so it lives in its own virtual environment, built by ``make recbole-venv`` from
``peers/recbole/requirements.txt`` (every package pinned, installed without resolution). Only
torch and its CUDA libraries are shared with the product's ``.venv``: they are linked in by
:mod:`peers.recbole.link_torch` (the same pinned torch, not a second 4 GB copy), behind the
peer's own packages on ``sys.path``. RecBole runs unmodified; what it does to its process
(anomaly detection switched on at import, ``sys.argv`` read as settings, ``./log_tensorboard``)
is handled by :mod:`peers.recbole.runtime` in this process only.

Entry point (the product calls it through :mod:`model.recbole_peer`)::

    .venv-recbole/bin/python -m peers.recbole sasrec --seed 2020 --json out.json --scores out.npz
    .venv-recbole/bin/python -m peers.recbole ss4rec ...      # our SS4Rec under RecBole's trainer
    .venv-recbole/bin/python -m peers.recbole throughput ...  # RecBole SASRec training samples/s
    .venv-recbole/bin/python -m peers.recbole metrics --scores in.npz --json out.json
    .venv-recbole/bin/python -m peers.recbole split --json out.json

Its tests run in its own interpreter: ``.venv-recbole/bin/python -m pytest peers/recbole``
(part of ``make test``).
"""
