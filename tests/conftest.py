"""Shared test configuration: the ``--soak`` flag gates long fuzz and soak runs."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile(
    "soak", max_examples=20000, deadline=None, suppress_health_check=list(HealthCheck)
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run long fuzz/soak tests (marker: soak)")


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("soak" if config.getoption("--soak") else "default")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long run: pass --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
