"""A real independent peer: ``pyd3tn`` in its own virtual environment, run as a separate process.

pyd3tn pins an old ``cbor2``, so it never shares an interpreter with fleetwire. The fixture
builds its environment once per test session (or reuses ``FLEETWIRE_PYD3TN_PYTHON`` if set to
an interpreter that already has it) and gives tests a way to run scripts in it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path

import pytest

PYD3TN_REQUIREMENT = "pyd3tn==0.15.2"

RunPeer = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture(scope="session")
def pyd3tn_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a Python interpreter that can ``import pyd3tn``."""
    preset = os.environ.get("FLEETWIRE_PYD3TN_PYTHON")
    if preset:
        return Path(preset)
    where = tmp_path_factory.mktemp("pyd3tn-venv")
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", PYD3TN_REQUIREMENT],
        capture_output=True,
        timeout=600,
    )
    if result.returncode != 0:
        pytest.fail(f"could not install {PYD3TN_REQUIREMENT}: {result.stderr.decode()[-2000:]}")
    return python


@pytest.fixture(scope="session")
def run_pyd3tn(pyd3tn_python: Path) -> RunPeer:
    """Run a Python script in the pyd3tn environment: ``run_pyd3tn(script, *args, input=b"")``."""

    def run(script: str, *args: str, input: bytes = b"", timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [str(pyd3tn_python), "-c", script, *args],
            input=input,
            capture_output=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise AssertionError(f"pyd3tn peer failed:\n{result.stderr.decode()[-4000:]}")
        return result

    return run
