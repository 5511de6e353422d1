"""Downloader for the MovieLens releases published by GroupLens.

``download_dataset("ml-25m", raw_dir)`` fetches ``ml-25m.zip`` into ``raw_dir``, resuming a
partial ``.part`` file with an HTTP Range request, shows a progress bar, verifies the MD5
checksum (pinned here for the frozen releases; read from GroupLens' published ``.md5``
file for ``ml-latest-small`` and ``ml-32m``), then extracts the ratings file and returns its
path (:func:`download_movies` does the same for the release's movie file). An archive already
present and verified is not fetched again. Without network the error says which URL failed and
where to place the archive by hand.

CLI: ``python -m recsys.datasets download ml-1m [--raw-dir DIR]``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

GROUPLENS_BASE_URL = "https://files.grouplens.org/datasets/movielens"
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Release:
    """One downloadable MovieLens release."""

    name: str
    ratings_member: str
    ratings_format: str
    movies_member: str
    movies_format: str  # a format of recsys.datasets.items
    md5: str | None = None  # None: read GroupLens' sidecar "<archive>.md5"

    @property
    def archive(self) -> str:
        return f"{self.name}.zip"


RELEASES: dict[str, Release] = {
    release.name: release
    for release in (
        Release(
            "ml-latest-small",
            "ml-latest-small/ratings.csv",
            "ratings.csv",
            "ml-latest-small/movies.csv",
            "movies.csv",
        ),
        Release(
            "ml-1m",
            "ml-1m/ratings.dat",
            "ratings.dat",
            "ml-1m/movies.dat",
            "movies.dat",
            "c4d9eecfca2ab87c1945afe126590906",
        ),
        Release(
            "ml-20m",
            "ml-20m/ratings.csv",
            "ratings.csv",
            "ml-20m/movies.csv",
            "movies.csv",
            "cd245b17a1ae2cc31bb14903e1204af3",
        ),
        Release(
            "ml-25m",
            "ml-25m/ratings.csv",
            "ratings.csv",
            "ml-25m/movies.csv",
            "movies.csv",
            "6b51fb2759a8657d3bfcbfc42b592ada",
        ),
        Release("ml-32m", "ml-32m/ratings.csv", "ratings.csv", "ml-32m/movies.csv", "movies.csv"),
    )
}


class DownloadError(RuntimeError):
    """A release could not be fetched or did not verify."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0):
    request = urllib.request.Request(url, headers={"User-Agent": "movielens-recsys", **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot reach {url}: {reason}. Are you offline? Download the archive elsewhere and "
            "place it in the raw data directory; it is verified and used as it is."
        ) from exc


def expected_md5(release: Release, base_url: str) -> str:
    if release.md5 is not None:
        return release.md5
    url = f"{base_url}/{release.archive}.md5"
    with _open(url) as response:
        text = response.read().decode("ascii", errors="replace").strip()
    token = text.split()[0] if text else ""
    if len(token) != 32 or any(c not in "0123456789abcdef" for c in token.lower()):
        raise DownloadError(f"{url}: expected an MD5 hex digest, got {text[:80]!r}")
    return token.lower()


def _fetch(url: str, part: Path) -> None:
    """Download ``url`` into ``part``, resuming from its current size when possible."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with _open(url, headers) as response:
        status = getattr(response, "status", 200)
        if offset and status != 206:
            log.info("server ignored the range request; restarting %s from zero", url)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        mode = "ab" if offset else "wb"
        with (
            part.open(mode) as out,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=part.name.removesuffix(".part")
            ) as bar,
        ):
            while True:
                try:
                    block = response.read(CHUNK_BYTES)
                except (OSError, TimeoutError) as exc:
                    raise DownloadError(
                        f"{url}: connection lost after {out.tell()} bytes ({exc}); run again to resume"
                    ) from exc
                if not block:
                    break
                out.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise DownloadError(
            f"{url}: transfer ended at {part.stat().st_size} of {total} bytes; run again to resume"
        )


def download_archive(name: str, raw_dir: Path | str, base_url: str = GROUPLENS_BASE_URL) -> Path:
    """The verified archive of a release in ``raw_dir``, downloading or resuming as needed."""
    if name not in RELEASES:
        raise KeyError(f"unknown MovieLens release {name!r}; choose one of {sorted(RELEASES)}")
    release = RELEASES[name]
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    archive = raw_dir / release.archive
    base_url = base_url.rstrip("/")
    md5 = expected_md5(release, base_url)
    if archive.exists():
        if md5_of(archive) == md5:
            log.info("%s already present and verified", archive)
            return archive
        raise DownloadError(f"{archive}: exists but its MD5 is not {md5}; delete it and run again")
    part = archive.with_name(archive.name + ".part")
    _fetch(f"{base_url}/{release.archive}", part)
    actual = md5_of(part)
    if actual != md5:
        part.unlink()
        raise DownloadError(
            f"{base_url}/{release.archive}: checksum mismatch (MD5 {actual}, expected {md5}); "
            "the partial file was removed, run again"
        )
    os.replace(part, archive)
    log.info("downloaded and verified %s", archive)
    return archive


def extract_member(archive: Path, member: str, raw_dir: Path) -> Path:
    """Extract one member of the archive to ``raw_dir / member`` (atomically; kept if already there)."""
    target = raw_dir / member
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    try:
        with (
            zipfile.ZipFile(archive) as bundle,
            bundle.open(member) as src,
            tmp.open("wb") as dst,
        ):
            shutil.copyfileobj(src, dst, CHUNK_BYTES)
    except KeyError as exc:
        raise DownloadError(f"{archive}: has no member {member}") from exc
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive}: not a valid zip archive ({exc})") from exc
    os.replace(tmp, target)
    return target


def extract_ratings(archive: Path, release: Release, raw_dir: Path) -> Path:
    """Extract the release's ratings file next to the archive (atomically)."""
    return extract_member(archive, release.ratings_member, raw_dir)


def extract_movies(archive: Path, release: Release, raw_dir: Path) -> Path:
    """Extract the release's movie file next to the archive (atomically)."""
    return extract_member(archive, release.movies_member, raw_dir)


def download_dataset(name: str, raw_dir: Path | str, base_url: str = GROUPLENS_BASE_URL) -> Path:
    """Download (or reuse) a release and return the path of its extracted ratings file."""
    raw_dir = Path(raw_dir)
    archive = download_archive(name, raw_dir, base_url)
    return extract_ratings(archive, RELEASES[name], raw_dir)


def download_movies(name: str, raw_dir: Path | str, base_url: str = GROUPLENS_BASE_URL) -> Path:
    """Download (or reuse) a release and return the path of its extracted movie file."""
    raw_dir = Path(raw_dir)
    archive = download_archive(name, raw_dir, base_url)
    return extract_movies(archive, RELEASES[name], raw_dir)
