"""The registered model as an MLflow pyfunc *from code*: nothing of it is pickled.

MLflow stores this file with the model (:func:`model.tracking.log_model_version`) and runs it at
``mlflow.pyfunc.load_model``; :meth:`RecommenderModel.load_context` then reads the version's
artifacts, the safetensors weights, the vocabularies and the configuration, with
:func:`model.train.load_trained_model`.

``predict`` takes rows of the ``sequences`` table (``user_id``, ``item_ids``, ``timestamps``,
``split``) and returns each user's top ``k`` unseen items as ``user_id, rank, item_id, score``,
scored at ``query_time`` (params; default: each user's last event), the nightly job's scoring
path (:func:`model.score.score_model_users`) on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import set_model


class RecommenderModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from model.train import load_trained_model

        directory = Path(context.artifacts["weights"]).parent
        self.model, vocab, self.config = load_trained_model(directory, "cpu")
        self.item_vocab = vocab["items"]

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        import pyarrow as pa
        import torch

        from model.data import SequenceData
        from model.score import PhaseSeconds, score_model_users

        params = params or {}
        top_k = int(params.get("k", self.config.scoring.top_k))
        data = SequenceData.from_arrow(
            pa.Table.from_pandas(model_input, preserve_index=False),
            item_vocab=self.item_vocab,
            unknown_items="skip",
        )
        users = np.flatnonzero(np.diff(data.offsets) > 0)
        query_time = int(params.get("query_time", 0))  # clamped up to each user's last event
        frames = []
        for scored in score_model_users(
            self.model,
            data,
            users,
            data.seen("full"),
            query_time,
            top_k,
            self.config.scoring.batch_size,
            self.config.scoring.encode_batch_size,
            self.config.model.max_seq_len,
            torch.device("cpu"),
            PhaseSeconds(),
        ):
            rows, columns = np.nonzero(np.arange(scored.items.shape[1])[None, :] < scored.counts[:, None])
            frames.append(
                pd.DataFrame(
                    {
                        "user_id": data.user_vocab.decode(scored.users[rows]),
                        "rank": columns + 1,
                        "item_id": data.item_vocab.decode(scored.items[rows, columns]),
                        "score": scored.scores[rows, columns],
                    }
                )
            )
        columns = ["user_id", "rank", "item_id", "score"]
        if not frames:
            return pd.DataFrame(columns=columns)
        return pd.concat(frames, ignore_index=True).sort_values(["user_id", "rank"], ignore_index=True)


set_model(RecommenderModel())
