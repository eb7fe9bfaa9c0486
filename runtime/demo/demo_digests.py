"""The demo's telemetry: what each member measures, digests and sends its coordinator.

Theory of operation
-------------------
High-rate telemetry stays on a node; what crosses the link is a **digest** of it (the seeds;
``protocol/coordination/digests.py``, spec/v2/faults.md §1). Each member runs one
:class:`~fleetwire.protocol.coordination.digests.DigestBuilder` over the :data:`METRICS` below,
fed by :class:`Telemetry`: every :data:`SAMPLE_EVERY_MS` one sample per metric, drawn around the
metric's centre with its sigma (a seeded generator, so a seed gives one run). A member whose
defect shows (the fault scenario) reads feedstock quality :data:`DEFECT_SIGMAS` sigma off
centre: a threshold crossing, so the builder emits an *event-driven* digest at once (at most one
per ``min_event_gap_ms``) besides the *periodic* one every :data:`DIGEST_PERIOD_MS`.

**Message.** A digest travels as the version-2 message of spec/v2/faults.md §1 (type 10,
:class:`fleetwire.protocol.messages.v2.Digest`), signed by the member: the fault roles'
conversions (``roles/fault_messages``) turn the builder's digest into it and a received one back
(the codec bounds and checks it on arrival, as any input from the network). A version-1 reader
has no digests, so a member writes one only to a coordinator that advertised it reads version 2
(:func:`writable`); until then its digests wait, a few at most (:data:`HELD_DIGESTS`), and a
member pinned at version 1 has none to send.

**Baseline.** The samples a digest summarises are kept on the node as its detail chunk; their
encoded size per sample, times the metrics, times :data:`STREAM_HZ`, is what *streaming* the
telemetry instead would cost (:func:`stream_bytes_per_s`) — the line the report draws beside
the coordination traffic. The demo samples every 15 minutes to keep simulated runs fast; the
baseline is stated at 1 Hz, a modest rate for live telemetry, in the samples' own encoding
with no envelope or bundle around them (a lower bound).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Final

from fleetwire.protocol.coordination.digests import (
    Action,
    Digest,
    DigestBuilder,
    EmitDigest,
    KeepDetail,
    MetricSpec,
)
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.messages import v2
from fleetwire.protocol.messages.versions import PeerVersions

MINUTE: Final = 60_000
HOUR: Final = 60 * MINUTE
#: One periodic digest per contact cycle: members see their coordinator every three hours.
DIGEST_PERIOD_MS: Final = 3 * HOUR
SAMPLE_EVERY_MS: Final = 15 * MINUTE
#: Threshold crossings send a digest at once, but at most one per half hour.
EVENT_GAP_MS: Final = 30 * MINUTE
#: Digests a member keeps while its coordinator's versions are unknown (the oldest go first).
HELD_DIGESTS: Final = 8
#: The rate the telemetry-stream baseline assumes: one sample per metric per second.
STREAM_HZ: Final = 1.0
DEFECT_SIGMAS: Final = 6

#: What a member measures: histogram edges, the control chart's centre and sigma (limits at
#: ``k`` sigma), and an alarm level, in each metric's unit.
METRICS: Final[Mapping[str, MetricSpec]] = {
    "bus_voltage_mv": MetricSpec((27_000, 27_500, 28_000, 28_500, 29_000), 28_000, 150, k=4),
    "feedstock_quality_ppm": MetricSpec((900, 950, 1000, 1050, 1100), 1000, 20, k=4, alarm=1200),
    "furnace_temp_c": MetricSpec((1_400, 1_450, 1_500, 1_550, 1_600), 1_500, 15, k=4),
    "power_draw_w": MetricSpec((2_000, 2_500, 3_000, 3_500, 4_000), 3_000, 120, k=4),
    "pressure_pa": MetricSpec((95_000, 99_000, 101_000, 103_000, 107_000), 101_000, 600, k=4),
    "throughput_g_min": MetricSpec((100, 200, 300, 400, 500), 300, 25, k=4),
}


class Telemetry:
    """One member's sampled telemetry and its digest builder (module docstring)."""

    def __init__(self, node: int, seed: int, start: int, scale: int = 1) -> None:
        # ``scale`` divides the periods, as the process engine's real clock runs faster.
        self.builder = DigestBuilder(
            node, METRICS, DIGEST_PERIOD_MS // scale, start,
            min_event_gap_ms=EVENT_GAP_MS // scale,
        )  # fmt: skip
        self._every = max(1, SAMPLE_EVERY_MS // scale)
        self._rng = random.Random(seed * 65_537 + node)
        self._next_sample = start
        self.samples = 0
        self.detail_bytes = 0

    def advance(self, now: int, defect: Callable[[int], bool]) -> list[Digest]:
        """Take the samples due up to ``now`` (``defect(t)``: whether the fault shows at ``t``);
        the digests to send, event-driven ones first."""
        digests: list[Digest] = []
        while self._next_sample <= now:
            at = self._next_sample
            for name, spec in METRICS.items():
                assert spec.center is not None and spec.sigma is not None
                value = self._rng.gauss(spec.center, spec.sigma)
                if name == "feedstock_quality_ppm" and defect(at):
                    value += DEFECT_SIGMAS * spec.sigma
                self.samples += 1
                digests += self._take(self.builder.observe(name, round(value), at))
            self._next_sample += self._every
        digests += self._take(self.builder.tick(now))
        return digests

    def _take(self, actions: list[Action]) -> list[Digest]:
        out = []
        for action in actions:
            if isinstance(action, KeepDetail):
                # Kept on the node for a forensic pull; only its size matters to the demo.
                self.detail_bytes += len(action.data)
            elif isinstance(action, EmitDigest):
                out.append(action.digest)
        return out


def writable(versions: PeerVersions, coordinator: int) -> bool:
    """Whether a digest can be written for ``coordinator``: the node writes to it at a version
    that has the digest message (spec/v2/versions.md §2)."""
    try:
        return versions.write_version(coordinator) >= v2.Digest.SINCE
    except FleetwireError:  # no version both read (NoCommonVersion): nothing can be written
        return False


def stream_bytes_per_s(samples: int, detail_bytes: int) -> float:
    """Streaming every metric at :data:`STREAM_HZ` in the detail chunks' encoding (B/s)."""
    if not samples:
        return 0.0
    return detail_bytes / samples * len(METRICS) * STREAM_HZ
