"""No secret in the repository, and no code path of the product that unpickles."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from tests.secret_patterns import find_secrets

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("dags", "expectations", "model", "orchestration", "peers", "recsys", "spark_jobs", "bench")
#: A line holding a deliberately planted secret (a test of a check) says so.
ALLOW = "secret-scan: planted"


def _repo_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("aws_access_key_id = AKIA" + "IOSFODNN7EXAMPLE", "AWS access key id"),
        ("-----BEGIN RSA " + "PRIVATE KEY-----", "private key"),
        ("token ghp_" + "a" * 36, "GitHub token"),
        ("https://hooks.slack.com/services/" + "T0000/B0000/" + "x" * 24, "Slack webhook"),
        ("s3a://" + "user:s3cr3tpass@bucket/path", "credentials in a URL"),
        ("password = '" + "Tr0ub4dor&3horse" + "'", "assigned secret"),
    ],
)
def test_the_scanner_finds_each_kind_of_secret(text, kind):
    assert [k for k, _ in find_secrets(text)] == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "password: '{{ conn.password }}'",
        "url: postgresql://u:${PW:?set it}@db/x",
        'AIRFLOW_CONN_SPARK_RECSYS=\'{"conn_type": "spark", "host": "local[2]"}\'',
        "sqlite:////tmp/lake/mlflow/mlflow.db",
    ],
)
def test_the_scanner_leaves_placeholders_and_plain_urls(text):
    assert find_secrets(text) == []


def test_no_secret_in_the_repository():
    found = []
    files = _repo_files()
    assert len(files) > 100
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for line_number, line in enumerate(text.splitlines(), 1):
            if ALLOW not in line:
                found += [(f"{path.relative_to(ROOT)}:{line_number}", kind) for kind, _ in find_secrets(line)]
    assert found == []


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_loads(source: str) -> list[str]:
    """Calls that can unpickle: pickle-family loads, ``torch.load`` without a literal
    ``weights_only=True``, ``allow_pickle=True``, ``pandas.read_pickle``, ``yaml.load``/``unsafe_load``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        base, _, attr = name.rpartition(".")
        weights_only, allow_pickle = _keyword(node, "weights_only"), _keyword(node, "allow_pickle")
        pickle_family = base in ("pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib")
        unsafe_torch = name == "torch.load" and not (
            isinstance(weights_only, ast.Constant) and weights_only.value is True
        )
        pickles_arrays = isinstance(allow_pickle, ast.Constant) and allow_pickle.value is True
        unsafe_yaml = name == "yaml.load" or attr in ("unsafe_load", "full_load")
        if (
            (pickle_family and attr.startswith("load"))
            or unsafe_torch
            or pickles_arrays
            or attr == "read_pickle"
            or unsafe_yaml
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize(
    ("source", "unsafe"),
    [
        ("import torch\ntorch.load(p)", True),
        ("import torch\ntorch.load(p, weights_only=False)", True),
        ("import torch\ntorch.load(p, map_location='cpu', weights_only=True)", False),
        ("import pickle\npickle.loads(b)", True),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", True),
        ("import numpy as np\nnp.load(p, allow_pickle=False)", False),
        ("import pandas as pd\npd.read_pickle(p)", True),
        ("import yaml\nyaml.load(t)", True),
        ("import yaml\nyaml.safe_load(t)", False),
    ],
)
def test_the_load_scan_tells_safe_from_unsafe(source, unsafe):
    assert bool(unsafe_loads(source)) is unsafe


def test_nothing_in_the_product_unpickles():
    found = []
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += [
                f"{path.relative_to(ROOT)} {hit}" for hit in unsafe_loads(path.read_text(encoding="utf-8"))
            ]
    assert found == []
