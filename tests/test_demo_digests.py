"""The demo's telemetry digests: sampled, digested, sent as the version-2 message, read back."""

from __future__ import annotations

import attrs
import pytest
from fleetwire.protocol.coordination.digests import Trigger
from fleetwire.protocol.envelope import seal
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Header,
    decode_message,
    encode_message,
    v2,
)
from fleetwire.protocol.messages.versions import NotExpressible, PeerVersions, convert
from fleetwire.runtime.demo import demo_digests
from fleetwire.runtime.roles.fault_messages import digest_from_message, digest_message

START = 820_000_000_000
HOUR = 3_600_000


def advert() -> CapabilityAdvertisement:
    return CapabilityAdvertisement(
        header=Header(issuer=1001, issued_at=START, sequence=1),
        capabilities=(Capability("refine/carbonaceous", 20_000, "kg", START, START + HOUR),),
        versions=(1, 1),
        lineage="A",
        cell=0,
    )


def test_periodic_and_event_driven_digests() -> None:
    healthy = demo_digests.Telemetry(1001, seed=1, start=START)
    digests = [
        d for k in range(1, 13) for d in healthy.advance(START + k * HOUR // 2, lambda t: False)
    ]
    # Six hours woken every half hour: one periodic digest every three hours.
    assert [(d.trigger, d.period_end - START) for d in digests] == [
        (Trigger.PERIODIC, 3 * HOUR),
        (Trigger.PERIODIC, 6 * HOUR),
    ]
    assert healthy.samples == len(demo_digests.METRICS) * (6 * 4 + 1)
    assert all(m.count in (12, 13) for d in digests for m in d.metrics.values())
    faulty = demo_digests.Telemetry(1002, seed=1, start=START)
    digests = faulty.advance(START + 2 * HOUR, lambda t: t >= START + HOUR)
    # The first sample past the limits goes out at once; the next no sooner than the gap.
    threshold = [d for d in digests if d.trigger is Trigger.THRESHOLD]
    # The defect shows from hour 1 to 2 (samples every 15 minutes): crossings at 60, 90 and
    # 120 minutes; those at 75 and 105 fall inside the gap.
    assert [d.period_end - START for d in threshold] == [HOUR, 3 * HOUR // 2, 2 * HOUR]
    assert threshold[0].metrics["feedstock_quality_ppm"].out_of_control >= 1


def test_a_digest_is_the_version_2_message_and_reads_back() -> None:
    telemetry = demo_digests.Telemetry(1001, seed=1, start=START)
    (digest,) = telemetry.advance(START + 3 * HOUR, lambda t: False)
    header = Header(issuer=1001, issued_at=START + 3 * HOUR, sequence=1)
    # Written as the node writes it for a coordinator that reads version 3.
    signed = seal(convert(digest_message(header, digest), 3), SigningKey.from_seed(bytes(32)))
    read = decode_message(encode_message(signed.message))
    assert isinstance(read, v2.Digest) and read.header.version >= 2
    assert digest_from_message(read) == digest
    # A version-1 reader has no digests: the message cannot be written at version 1.
    with pytest.raises(NotExpressible):
        convert(signed.message, 1)


def test_a_digest_is_written_only_for_a_coordinator_that_reads_version_2() -> None:
    versions = PeerVersions(own=3)
    assert not demo_digests.writable(versions, 10)  # not heard from: the oldest version
    versions.learn(attrs.evolve(advert(), header=Header(issuer=10, issued_at=START, sequence=1),
                                versions=(1, 3)))  # fmt: skip
    assert demo_digests.writable(versions, 10)
    versions.learn(attrs.evolve(advert(), header=Header(issuer=11, issued_at=START, sequence=1)))
    assert not demo_digests.writable(versions, 11)  # it reads version 1 only
    assert not demo_digests.writable(PeerVersions(own=1), 10)  # a v1 node has no digests


def test_streaming_baseline_scales_with_the_metrics() -> None:
    assert demo_digests.stream_bytes_per_s(0, 0) == 0.0
    per_sample = 12
    rate = demo_digests.stream_bytes_per_s(100, 100 * per_sample)
    assert rate == per_sample * len(demo_digests.METRICS) * demo_digests.STREAM_HZ
