"""spec/vectors/v2 and v3: the committed files are what spec/generate_later_vectors.py writes,
they cover every type of their version, and fleetwire, reading as each version, meets them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from fleetwire.conformance.vectors import Fleetwire, Verdict, load_vectors, run_vectors
from fleetwire.protocol.messages import MESSAGE_CLASSES

SPEC = Path(__file__).resolve().parent.parent / "spec"


def load_generator() -> ModuleType:
    path = SPEC / "generate_later_vectors.py"
    spec = importlib.util.spec_from_file_location("generate_later_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", [2, 3])
def test_committed_vectors_equal_a_fresh_generation(version: int) -> None:
    generator = load_generator()
    folder = SPEC / "vectors" / f"v{version}"
    documents = generator.documents(version)
    assert sorted(documents) == sorted(p.name for p in folder.glob("*.json"))
    for name, document in documents.items():
        text = generator.V1.render(document)
        assert (folder / name).read_text(encoding="utf-8") == text, (
            f"v{version}/{name} is stale: run python spec/generate_later_vectors.py"
        )


@pytest.mark.parametrize("version", [2, 3])
def test_every_type_of_the_version_has_a_valid_vector(version: int) -> None:
    documents = load_vectors(version, SPEC)
    types = {vector["message"]["type"] for vector in documents["valid.json"]["vectors"]}
    assert types >= {int(t) for t, cls in MESSAGE_CLASSES.items() if version == cls.SINCE}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_fleetwire_reading_as_each_version_meets_its_vectors(version: int) -> None:
    report = run_vectors(version, Fleetwire(version), SPEC)
    assert report.ok, report.summary()
    assert not report.of(Verdict.IMPRECISE), report.summary()


def test_a_reader_of_two_refuses_what_only_three_reads() -> None:
    """The v3 valid vectors that need a v3 reader are refused by fleetwire pinned at 2."""
    reader = Fleetwire(2)
    for vector in load_vectors(3, SPEC)["valid.json"]["vectors"]:
        outcome = reader.decode(bytes.fromhex(vector["hex"]))
        if vector["message"]["min_version"] == 3:
            assert getattr(outcome, "code", None) == "version-unsupported", vector["id"]
        else:
            assert getattr(outcome, "hex", None) == vector["hex"], vector["id"]
