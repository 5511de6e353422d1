"""Link the product venv's torch (and what torch needs) into the RecBole peer's environment.

Run by the peer's own interpreter (``make recbole-venv``)::

    .venv-recbole/bin/python -m peers.recbole.link_torch .venv

It walks torch's install requirements in the product venv's metadata, and for every
distribution of that closure the peer does not install itself it symlinks the top-level files
and folders the distribution owns (its RECORD) into ``<peer>/product-torch/``. A ``.pth``
file puts that folder on ``sys.path`` after the peer's own site-packages, so the peer's
pins (numpy 1.26, ...) always win and nothing else of the product is visible. The folder is
rebuilt on every run; links and the ``.pth`` line are relative, so moving the checkout with both
environments keeps them valid.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import sysconfig
from importlib.metadata import Distribution, PackageNotFoundError, distribution, distributions
from pathlib import Path

ROOT_DISTRIBUTION = "torch"
LINK_DIR = "product-torch"
PTH_NAME = "zz_product_torch.pth"


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def torch_closure(site_packages: Path) -> dict[str, Distribution]:
    """Distributions of ``site_packages`` that torch needs (itself included), by normalised name."""
    found = {_key(d.metadata["Name"]): d for d in distributions(path=[str(site_packages)])}
    if _key(ROOT_DISTRIBUTION) not in found:
        raise SystemExit(f"{site_packages}: no {ROOT_DISTRIBUTION} installed there (run `make venv` first)")
    closure: dict[str, Distribution] = {}
    todo = [ROOT_DISTRIBUTION]
    while todo:
        key = _key(todo.pop())
        if key in closure or key not in found:
            continue
        closure[key] = found[key]
        for requirement in found[key].requires or []:
            if "extra ==" not in requirement:
                todo.append(re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0))
    return closure


def top_level_paths(dist: Distribution, site_packages: Path) -> set[Path]:
    """The top-level entries of ``site_packages`` that ``dist`` owns (folders, modules, metadata)."""
    tops = set()
    for file in dist.files or []:
        first = Path(file).parts[0]
        if first not in ("..", "__pycache__") and not first.endswith(".pth"):
            tops.add(site_packages / first)
    return {p for p in tops if p.exists()}


def installed_here(name: str) -> bool:
    try:
        dist = distribution(name)
    except PackageNotFoundError:
        return False
    return Path(str(dist.locate_file(""))).resolve() == Path(sysconfig.get_path("purelib")).resolve()


def link(product_venv: Path) -> list[str]:
    purelib = Path(sysconfig.get_path("purelib"))
    site_packages = product_venv.resolve() / purelib.relative_to(Path(sys.prefix))
    target = Path(sys.prefix) / LINK_DIR
    shutil.rmtree(target, ignore_errors=True)  # no link left from an earlier torch
    target.mkdir()
    linked = []
    for key, dist in sorted(torch_closure(site_packages).items()):
        if installed_here(dist.metadata["Name"]):
            continue  # the peer pins its own copy (typing_extensions, filelock, ...)
        for path in top_level_paths(dist, site_packages):
            entry = target / path.name
            if not entry.is_symlink():  # a namespace folder (cuda/) is owned by several distributions
                # Relative links and a relative .pth line: a checkout moved with both venvs keeps working.
                entry.symlink_to(os.path.relpath(path, target))
        linked.append(key)
    (purelib / PTH_NAME).write_text(f"{os.path.relpath(target, purelib)}\n")
    return linked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("product_venv", type=Path, help="the product's virtual environment (.venv)")
    args = parser.parse_args(argv)
    linked = link(args.product_venv)
    print(f"linked into {Path(sys.prefix) / LINK_DIR}: {', '.join(linked)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
