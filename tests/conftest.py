"""Shared test fixtures. Vectors are copied into tests/vectors so the suite stands alone."""

from __future__ import annotations

import json
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
