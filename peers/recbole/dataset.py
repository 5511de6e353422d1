"""RecBole's SequentialDataset with the time field kept exact (float64 seconds).

RecBole stores float fields as float32, so Unix seconds around 1e9 are exact only to 64 s, and
its ml-100k.yaml min-max normalises them (``normalize_all: True``). On ML-100K that reorders 83
users' histories and moves the test item of 4 users and the validation item of 5, so it would
not evaluate on the split the pipeline uses. :class:`ExactTimeSequentialDataset` keeps the time
field in float64 (exact for integer seconds below 2^53); the configs switch normalisation off.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from recbole.data import dataset as _recbole_dataset_module
from recbole.data.dataset import SequentialDataset
from recbole.utils import FeatureType

__all__ = ["ExactTimeSequentialDataset"]


class ExactTimeSequentialDataset(SequentialDataset):
    """RecBole's SequentialDataset with the time field kept in float64 instead of float32."""

    def _dataframe_to_interaction(self, data: Any) -> Any:
        interaction = super()._dataframe_to_interaction(data)
        field = self.time_field
        if (
            field is not None
            and field in data
            and self.field2type.get(field) == FeatureType.FLOAT
            and field not in (self.config["numerical_features"] or [])
        ):
            values = data[field].to_numpy(dtype=np.float64, copy=True)
            interaction.interaction[field] = torch.from_numpy(values)
        return interaction


# RecBole's create_dataset picks ``recbole.data.dataset.<model name>Dataset`` when it exists: the
# SS4Rec adapter (peers.recbole.ss4rec_adapter.SS4RecAdapter) gets the exact-time dataset.
_recbole_dataset_module.SS4RecAdapterDataset = ExactTimeSequentialDataset
