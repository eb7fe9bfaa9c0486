"""The demo's telemetry digests: sampled, digested, carried on a v1 message, read back safely."""

from __future__ import annotations

import pytest
from fleetwire.protocol.coordination.digests import DigestError, Trigger
from fleetwire.protocol.envelope import seal
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Header,
    decode_message,
    encode_message,
)
from fleetwire.runtime import demo_digests

START = 820_000_000_000
HOUR = 3_600_000


def advert(extensions: tuple[tuple[int, object], ...] = ()) -> CapabilityAdvertisement:
    return CapabilityAdvertisement(
        header=Header(issuer=1001, issued_at=START, sequence=1),
        capabilities=(Capability("refine/carbonaceous", 20_000, "kg", START, START + HOUR),),
        versions=(1, 1),
        lineage="A",
        cell=0,
        extensions=extensions,
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


def test_a_digest_rides_a_v1_message_and_reads_back() -> None:
    telemetry = demo_digests.Telemetry(1001, seed=1, start=START)
    (digest,) = telemetry.advance(START + 3 * HOUR, lambda t: False)
    message = demo_digests.carrier(advert(), digest)
    signed = seal(message, SigningKey.from_seed(bytes(32)))
    read = decode_message(encode_message(signed.message))  # as a v1 reader gets it
    assert demo_digests.digest_of(read) == digest
    assert demo_digests.digest_of(advert()) is None


def test_a_malformed_digest_extension_is_a_typed_error() -> None:
    bad = advert(((demo_digests.DIGEST_KEY, {0: 1, 1: 5, 2: 4, 3: 0, 4: {}}),))
    with pytest.raises(DigestError, match="period_end"):
        demo_digests.digest_of(bad)


def test_streaming_baseline_scales_with_the_metrics() -> None:
    assert demo_digests.stream_bytes_per_s(0, 0) == 0.0
    per_sample = 12
    rate = demo_digests.stream_bytes_per_s(100, 100 * per_sample)
    assert rate == per_sample * len(demo_digests.METRICS) * demo_digests.STREAM_HZ
