"""Shared test fixtures. Vectors are copied into tests/vectors so the suite stands alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

VECTORS = Path(__file__).parent / "vectors"

settings.register_profile(
    "default",
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("default")


# The interpreter's own limit, as the service runs with it (anchoring/__init__.py keeps the
# Ethereum libraries from raising it). Test modules import eth-tester and py-evm, which
# raise it for the whole process; every test starts from the default again, so that the
# hostile-nesting tests see what a server sees.
DEFAULT_RECURSION_LIMIT = 1000


@pytest.fixture(autouse=True)
def _default_recursion_limit() -> None:
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)


def load_vector(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = load_vector("ves_golden_example.json")
    return data


@pytest.fixture(scope="session")
def sig_vectors() -> dict[str, Any]:
    data: dict[str, Any] = load_vector("ves_sig_1_test_vectors.json")
    return data


@pytest.fixture(scope="session")
def enc_vectors() -> dict[str, Any]:
    data: dict[str, Any] = load_vector("ves_enc_1_test_vectors.json")
    return data
