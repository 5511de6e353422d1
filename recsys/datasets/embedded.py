"""The embedded default dataset: MovieLens-100K as shipped inside the recbole package.

recbole carries ``dataset_example/ml-100k/ml-100k.inter`` (an atomic file of the 100,000
ratings: 943 users, 1,682 items), so the default run needs no download. The file is
located through the package's import metadata without importing recbole itself (which
would pull in torch).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from recsys.datasets.formats import FORMATS, read_ratings

ML100K_RELATIVE = Path("dataset_example") / "ml-100k" / "ml-100k.inter"
ML100K_ROWS = 100_000
ML100K_USERS = 943
ML100K_ITEMS = 1_682


def ml100k_path() -> Path:
    """Path of the ML-100K atomic file inside the installed recbole package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded MovieLens-100K ships inside the recbole package, which is not "
            "installed; run `make venv` (it installs recbole==1.2.1 with --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / ML100K_RELATIVE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: recbole is installed but its ml-100k example file is missing")
    return path


def load_ml100k() -> pd.DataFrame:
    """The 100,000 ML-100K ratings in the one schema."""
    return read_ratings(ml100k_path(), FORMATS["recbole-inter"])
