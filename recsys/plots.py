"""Charts the reports share: grouped bars of one metric per row and evaluation variant, as SVG."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def variant_bars(
    path: Path,
    labels: Sequence[str],
    values: Mapping[str, Sequence[float]],
    ylabel: str,
    title: str,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> None:
    """One group of bars per label, one bar per variant (``values[variant][i]`` for ``labels[i]``,
    with ``errors`` as error bars); written to ``path`` as SVG with no date (reproducible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9 + 0.6 * max(len(labels) - 8, 0), 4))
    width = 0.8 / max(len(values), 1)
    for offset, (variant, heights) in enumerate(values.items()):
        kwargs = {"yerr": list(errors[variant]), "capsize": 3} if errors is not None else {}
        axis.bar(
            [i + (offset - (len(values) - 1) / 2) * width for i in range(len(labels))],
            list(heights),
            width,
            label=variant,
            **kwargs,
        )
    axis.set_xticks(range(len(labels)), list(labels), rotation=20, ha="right")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(title="variant")
    figure.tight_layout()
    figure.savefig(path, format="svg", metadata={"Date": None})
    plt.close(figure)
