"""Digests: periodic and event-driven statistics, control charts, detail kept by content id, and
the bounded wire reader."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.coordination.digests import (
    Digest,
    DigestBuilder,
    DigestError,
    EmitDigest,
    KeepDetail,
    MetricSpec,
    Trigger,
    check_detail,
    decode_detail,
)
from fleetwire.protocol.errors import FleetwireError, LocalProtocolError
from hypothesis import given
from hypothesis import strategies as st

T0 = 7_000_000
MINUTE = 60_000
SPEC = MetricSpec(edges=(900, 1000, 1100), center=1000, sigma=20)


def digests(actions: list[Any]) -> list[Digest]:
    return [a.digest for a in actions if isinstance(a, EmitDigest)]


def test_a_periodic_digest_summarises_the_period_and_keeps_the_detail() -> None:
    builder = DigestBuilder(5, {"temp": SPEC, "flow": MetricSpec()}, MINUTE, T0)
    rng = random.Random(1)
    values = [round(rng.gauss(1000, 20)) for _ in range(60)]
    values = [min(max(v, 941), 1059) for v in values]  # stay inside the control limits
    for i, value in enumerate(values):
        assert builder.observe("temp", value, T0 + 1_000 * i) == []
    assert builder.tick(T0 + MINUTE - 1) == []
    actions = builder.tick(T0 + MINUTE)
    (keep,) = [a for a in actions if isinstance(a, KeepDetail)]
    (digest,) = digests(actions)
    stats = digest.metrics["temp"]
    assert (digest.node, digest.period_start, digest.period_end, digest.trigger) == (
        5,
        T0,
        T0 + MINUTE,
        Trigger.PERIODIC,
    )
    assert stats.count == 60 and stats.minimum == min(values) and stats.maximum == max(values)
    assert stats.mean_milli == round(1000 * statistics.fmean(values))
    assert abs(stats.sigma_milli - 1000 * statistics.stdev(values)) <= 1
    assert sum(stats.buckets) == 60 and stats.buckets[0] == 0 and stats.out_of_control == 0
    assert stats.buckets[1] == sum(1 for v in values if 900 <= v < 1000)
    assert digest.metrics["flow"].count == 0
    assert digest.details == (keep.content_id,)
    assert decode_detail(check_detail(keep.content_id, keep.data))["temp"] == [
        (T0 + 1_000 * i, v) for i, v in enumerate(values)
    ]
    with pytest.raises(DigestError, match="does not match"):
        check_detail(keep.content_id, keep.data[:-1] + b"\x00")
    assert builder.next_deadline() == T0 + 2 * MINUTE


def test_an_out_of_control_sample_sends_a_digest_at_once_rate_limited() -> None:
    builder = DigestBuilder(5, {"temp": SPEC}, MINUTE, T0, min_event_gap_ms=30_000)
    builder.observe("temp", 1000, T0)
    (event,) = digests(builder.observe("temp", 1061, T0 + 1_000))  # 3.05 sigma
    stats = event.metrics["temp"]
    assert event.trigger is Trigger.THRESHOLD and stats.out_of_control == 1
    assert stats.anomaly_milli == 3050 and event.period_end == T0 + 1_000
    assert digests(builder.observe("temp", 1100, T0 + 2_000)) == []  # inside the gap
    (second,) = digests(builder.observe("temp", 900, T0 + 31_000))
    assert second.metrics["temp"].out_of_control == 2 and second.period_start == T0 + 1_000
    assert builder.next_deadline() == T0 + 31_000 + MINUTE  # the period starts afresh


def test_an_alarm_threshold_is_a_crossing_too() -> None:
    builder = DigestBuilder(5, {"pressure": MetricSpec(alarm=500)}, MINUTE, T0)
    assert builder.observe("pressure", 499, T0) == []
    assert digests(builder.observe("pressure", 500, T0 + 1))[0].trigger is Trigger.THRESHOLD


def test_control_limits_are_learned_from_a_baseline_and_then_held() -> None:
    builder = DigestBuilder(5, {"temp": MetricSpec(baseline_samples=20)}, 10 * MINUTE, T0)
    rng = random.Random(2)
    for i in range(20):
        assert builder.observe("temp", 500 + rng.randrange(-10, 11), T0 + i) == []
    limits = builder.limits("temp")
    assert limits is not None and 490 < limits[0] < 510 and 2 < limits[1] < 10
    drift = [digests(builder.observe("temp", 500 + 2 * i, T0 + 100 + i)) for i in range(40)]
    assert any(drift) and builder.limits("temp") == limits  # the drift did not move the chart


def test_the_detail_kept_is_bounded() -> None:
    wide = MetricSpec(center=50, sigma=1000)  # nothing out of control: one period
    builder = DigestBuilder(5, {"temp": wide}, MINUTE, T0, max_samples=10)
    for i in range(100):
        builder.observe("temp", i, T0 + i)
    (keep,) = [a for a in builder.tick(T0 + MINUTE) if isinstance(a, KeepDetail)]
    (digest,) = digests(builder.tick(T0 + 2 * MINUTE)) or [None]  # nothing observed: no detail
    assert len(decode_detail(keep.data)["temp"]) == 10
    assert digest is not None and digest.details == () and digest.metrics["temp"].count == 0


def test_local_mistakes_are_refused() -> None:
    with pytest.raises(LocalProtocolError, match="ascend"):
        MetricSpec(edges=(3, 2))
    with pytest.raises(LocalProtocolError, match="together"):
        MetricSpec(center=1)
    with pytest.raises(LocalProtocolError, match="metric name"):
        DigestBuilder(5, {"": MetricSpec()}, MINUTE, T0)
    builder = DigestBuilder(5, {"temp": MetricSpec()}, MINUTE, T0)
    with pytest.raises(LocalProtocolError, match="unknown metric"):
        builder.observe("volts", 1, T0)
    with pytest.raises(LocalProtocolError, match="2\\^53"):
        builder.observe("temp", (1 << 53) + 1, T0)
    builder.observe("temp", -(1 << 53), T0)


# --- wire form ---------------------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(-(10**9), 10**9)), max_size=50))
def test_digests_round_trip_with_one_encoding(samples: list[tuple[str, int]]) -> None:
    builder = DigestBuilder(9, {"a": SPEC, "b": MetricSpec(edges=(0,))}, MINUTE, T0)
    emitted: list[Digest] = []
    for i, (name, value) in enumerate(samples):
        emitted += digests(builder.observe(name, value, T0 + i))
    emitted += digests(builder.tick(T0 + MINUTE + len(samples)))
    for digest in emitted:
        data = digest.to_cbor()
        assert Digest.from_cbor(data) == digest and Digest.from_cbor(data).to_cbor() == data


def _encoded(**changes: Any) -> bytes:
    stats = {0: 1, 1: 5000, 2: 0, 3: 5, 4: 5, 5: [1], 6: 0, 7: 0}
    body: dict[int, Any] = {0: 1, 1: 10, 2: 20, 3: 0, 4: {"t": stats}}
    for key, value in changes.items():
        index = int(key[1:])
        if value is None:
            del body[index]
        else:
            body[index] = value
    return cbor.encode(body)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (cbor.encode([]), "map"),
        (_encoded(k0=-1), "node"),
        (_encoded(k2=5), "before period_start"),
        (_encoded(k3=7), "trigger"),
        (_encoded(k4=[]), "metrics"),
        (_encoded(k4={"": {}}), "metric name"),
        (_encoded(k4={"t": {0: 1}}), "stats are the map"),
        (_encoded(k5=[]), "details"),
        (_encoded(k5=[b"\x12\x20"]), "details"),
        (_encoded(k5=["x"]), "byte strings"),
        (_encoded(k9=1), "map"),
    ],
)
def test_refused_digests_name_the_field(data: bytes, match: str) -> None:
    with pytest.raises(DigestError, match=match) as info:
        Digest.from_cbor(data)
    assert info.value.code == "digest-invalid"


def test_a_digest_decodes_only_from_its_one_encoding() -> None:
    assert Digest.from_cbor(_encoded()).to_cbor() == _encoded()
    with pytest.raises(FleetwireError):
        Digest.from_cbor(bytes.fromhex("b9000500") + _encoded()[1:])  # non-shortest map head


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_typed_errors(data: bytes) -> None:
    for reader in (Digest.from_cbor, decode_detail):
        try:
            reader(data)
        except FleetwireError:
            pass


@given(st.data())
def test_edited_digests_are_refused_or_reencode_to_themselves(data: Any) -> None:
    raw = bytearray(_encoded())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    try:
        digest = Digest.from_cbor(bytes(raw))
    except FleetwireError:
        return
    assert digest.to_cbor() == bytes(raw)
