"""Datasets: the embedded ML-100K, GroupLens downloads, and the synthetic generator.

:func:`raw_source` turns the configured ``data.dataset`` into the raw ratings file the
pipeline ingests, together with its native format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from recsys.config import Config, ConfigError, is_uri


@dataclass(frozen=True)
class RawSource:
    """A raw ratings file and how to read it."""

    dataset: str
    path: Path
    format_name: str


def raw_dir(config: Config) -> Path:
    """``data.raw_dir`` as a local directory: downloads and the generator write local files.

    An object-store URI (the cluster profile's ``s3a://...``) is refused with what to do instead,
    rather than becoming a local folder named ``s3a:``.
    """
    location = config.project_path(config.data.raw_dir)
    if is_uri(location):
        parsed = urlparse(location)
        if parsed.scheme != "file":
            raise ConfigError(
                f"data.raw_dir={location} is not local: downloads and the synthetic generator write "
                "local files; set a local directory (--set data.raw_dir=/data/raw, or "
                "RECSYS__DATA__RAW_DIR) and replay from there into the landing zone"
            )
        location = parsed.path
    return Path(location)


def synthetic_path(config: Config) -> Path:
    scale = f"{config.data.synthetic_scale:g}"
    return raw_dir(config) / f"synthetic-{scale}-{config.data.synthetic_seed}" / "ratings.csv"


def raw_source(config: Config) -> RawSource:
    """The raw file for ``config.data.dataset``, fetched or generated if not yet present."""
    name = config.data.dataset
    if name == "ml-100k":
        from recsys.datasets.embedded import ml100k_path

        return RawSource(name, ml100k_path(), "recbole-inter")
    if name == "synthetic":
        from recsys.datasets.synthetic import generate_synthetic

        path = synthetic_path(config)
        if not path.exists():
            generate_synthetic(path, scale=config.data.synthetic_scale, seed=config.data.synthetic_seed)
        return RawSource(name, path, "ratings.csv")
    from recsys.datasets.download import RELEASES, download_dataset

    path = download_dataset(name, raw_dir(config))
    return RawSource(name, path, RELEASES[name].ratings_format)
