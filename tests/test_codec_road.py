"""``--pure-python`` really takes the codec's C accelerator out, and only for that run.

The pure-Python road is what an install without a C compiler gets; CI runs the codec tests on
it. Were the switch to fail quietly, those runs would test the accelerator twice instead.
"""

from __future__ import annotations

import pytest
from fleetwire.protocol.messages import Header, accel, codec


def test_the_road_is_the_one_asked_for(request: pytest.FixtureRequest) -> None:
    pure = bool(request.config.getoption("--pure-python")) or not accel.AVAILABLE
    assert (codec._fast_read is None) is pure
    assert (type(Header.__dict__["__init__"]).__name__ == "function") is pure
    assert all(codec._WRITERS[cls] is codec._PY_WRITERS[cls] for cls in codec._WRITERS) is pure


def test_without_accelerator_restores_what_was_there() -> None:
    before = codec._fast_read, dict(codec._WRITERS), Header.__dict__["__init__"]
    with codec.without_accelerator():
        assert codec._fast_read is None
        assert type(Header.__dict__["__init__"]).__name__ == "function"
    assert (codec._fast_read, dict(codec._WRITERS), Header.__dict__["__init__"]) == before
