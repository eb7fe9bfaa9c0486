"""Shared test configuration.

``--soak`` runs the long fuzz and soak tests. ``--pure-python`` takes the C accelerator (codec,
bundle walk, bundle writer, content ids, the simulator's event queue, the in-memory store's
methods, the huge-page heap) out, so the pure-Python road (what installs without a compiler
get) is tested whole.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile(
    "soak", max_examples=20000, deadline=None, suppress_health_check=list(HealthCheck)
)


_PURE_PYTHON = pytest.StashKey[Any]()
_PURE_BUNDLES = pytest.StashKey[Any]()
_PURE_SEND = pytest.StashKey[Any]()
_PURE_RELAY = pytest.StashKey[Any]()
_PURE_STORE = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run long fuzz/soak tests (marker: soak)")
    parser.addoption(
        "--pure-python", action="store_true", help="run without the codec's C accelerator"
    )


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("soak" if config.getoption("--soak") else "default")
    if config.getoption("--pure-python"):
        from fleetwire.protocol import envelope  # noqa: F401  (its classes' inits go too)
        from fleetwire.protocol.agent import bundling  # noqa: F401  (and the bundle classes')
        from fleetwire.protocol.messages import codec

        # Entered for the whole session; the reference keeps it from being closed.
        config.stash[_PURE_PYTHON] = road = codec.without_accelerator()
        road.__enter__()
        from fleetwire.protocol.bpv7 import accel as bundle_accel

        config.stash[_PURE_BUNDLES] = walk = bundle_accel.without_walk()  # and the bundle walk
        walk.__enter__()
        # and the one-pass writer of new message bundles
        config.stash[_PURE_SEND] = send = bundle_accel.without_message_bytes()
        send.__enter__()
        # and the relay's one-pass forwarding bytes
        config.stash[_PURE_RELAY] = relay = bundle_accel.without_relay_forward()
        relay.__enter__()
        # and the content ids' C SHA-256 (hashlib's road instead)
        from fleetwire.protocol import ids

        ids._sha256 = None
        # and the simulator's C event queue (new simulators take the heapq road)
        from fleetwire.runtime.sim import event_queue

        event_queue.EventQueue = event_queue.PyEventQueue
        # and the in-memory store's C methods (the reference's instead)
        from fleetwire.protocol.agent import agent_store

        config.stash[_PURE_STORE] = store = agent_store.without_accelerator()
        store.__enter__()
        # and the huge-page heap (use_huge_pages answers False, as without the accelerator)
        from fleetwire.runtime.sim import huge_pages

        huge_pages._speedups = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long run: pass --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
