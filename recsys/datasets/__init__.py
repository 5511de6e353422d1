"""Datasets: the embedded ML-100K, GroupLens downloads, and the synthetic generator.

:func:`raw_source` turns the configured ``data.dataset`` into the raw ratings file the
pipeline ingests, together with its native format. :func:`check_format` refuses a ratings file
whose format only datasets of another rating scale come in.
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


#: The native ratings formats of the datasets that are not GroupLens downloads.
_NATIVE_FORMATS = {"ml-100k": ("u.data",), "synthetic": ("ratings.csv",)}
#: A format every dataset may come in: RecBole atomic files are exported from any of them.
ANY_DATASET_FORMAT = "recbole-inter"


def dataset_formats(dataset: str) -> tuple[str, ...]:
    """The ratings formats a file of ``dataset`` comes in: its native one, and RecBole's."""
    from recsys.datasets.download import RELEASES

    native = _NATIVE_FORMATS.get(dataset) or (RELEASES[dataset].ratings_format,)
    return (*native, ANY_DATASET_FORMAT)


def check_format(config: Config, format_name: str, file: str) -> None:
    """Refuse ``file`` (of ``format_name``) when no dataset that comes in that format rates on the
    scale of ``data.dataset``.

    The gate judges ratings on the configured dataset's scale (``pipeline.rating_scales``): an
    ML-25M ``ratings.csv`` (half stars from 0.5) loaded under the default ML-100K (1 to 5) would
    see its 0.5 ratings quarantined. The error names the file, both scales and the setting.
    """
    dataset = config.data.dataset
    scales = config.pipeline.rating_scales
    if format_name in dataset_formats(dataset) or any(
        format_name in dataset_formats(name) and scales[name] == scales.get(dataset) for name in scales
    ):
        return

    def scale(name: str) -> str:
        return "-".join(f"{v:g}" for v in scales.get(name, ())) or "unknown"

    message = (
        f"{file}: a {format_name} file, but data.dataset={dataset} (ratings {scale(dataset)}) comes as "
        f"{' or '.join(dataset_formats(dataset))}"
    )
    sources = [name for name in scales if name != dataset and format_name in dataset_formats(name)]
    if sources:
        message += (
            f"; {format_name} files come from "
            + ", ".join(f"{name} (ratings {scale(name)})" for name in sources)
            + f": run with --set data.dataset=<the file's dataset>, e.g. --set data.dataset={sources[0]}"
        )
    raise ConfigError(message)
