"""The agent's fast paths give exactly what the reference paths give (property tests).

Each shortcut the agent takes on its per-hop road has a slower reference it must equal byte
for byte: :func:`encode_message_bundle` against :func:`encode_bundle`, :func:`forward_bytes`
with the decoder's block offsets against a whole re-encode (:func:`for_next_hop`),
:func:`decode_bundle_offsets` against a scan of the bytes, the memoised extension-block
decoders against a fresh decoding, and :meth:`StoredBundle.checked_by_caller` against the
checked constructor.
"""

from __future__ import annotations

import pytest
from fleetwire.protocol.agent.bundling import (
    _offsets,
    encode_message_bundle,
    for_next_hop,
    forward_bytes,
    message_bundle,
)
from fleetwire.protocol.agent.store import StoredBundle
from fleetwire.protocol.bpv7 import (
    BundleError,
    BundleFlags,
    InvalidBundle,
    decode_bundle,
    decode_bundle_offsets,
    encode_bundle,
)
from fleetwire.protocol.bpv7 import extensions as ext
from hypothesis import given
from hypothesis import strategies as st

from tests.test_bpv7_bundle import bundles

U32 = (1 << 32) - 1
nodes = st.one_of(st.integers(0, 300), st.integers(0, U32))
reports = st.one_of(
    st.sampled_from([BundleFlags.NONE, BundleFlags.REPORT_DELIVERY,
                     BundleFlags.REPORT_RECEPTION | BundleFlags.REPORT_FORWARDING]),
    st.integers(0, 0x7FFFFF).map(BundleFlags),
)  # fmt: skip


@given(
    envelope=st.binary(max_size=400), source=nodes, destination=nodes,
    created=st.integers(0, 1 << 50), sequence=st.integers(0, 1 << 40),
    lifetime=st.integers(1, 1 << 40), service=st.integers(0, 1 << 20), flags=reports,
)  # fmt: skip
def test_message_bundle_encoding_equals_the_reference(
    envelope: bytes, source: int, destination: int, created: int, sequence: int,
    lifetime: int, service: int, flags: BundleFlags,
) -> None:  # fmt: skip
    bundle = message_bundle(
        envelope, source=source, destination=destination, created_at=created,
        sequence=sequence, lifetime_ms=lifetime, service=service, reports=flags,
    )  # fmt: skip
    try:
        reference = encode_bundle(bundle)
    except InvalidBundle as exc:  # both roads refuse it, for the same rule
        with pytest.raises(InvalidBundle) as caught:
            encode_message_bundle(bundle)
        assert caught.value.code == exc.code
        return
    data, offsets = encode_message_bundle(bundle)
    assert data == reference
    decoded, decoded_offsets = decode_bundle_offsets(data)
    assert decoded == bundle
    assert offsets == decoded_offsets


@given(bundle=bundles())
def test_decoder_offsets_are_the_block_boundaries(bundle: object) -> None:
    data = encode_bundle(bundle)  # type: ignore[arg-type]
    decoded, offsets = decode_bundle_offsets(data)
    assert decoded == decode_bundle(data)
    assert offsets == _offsets(data)
    assert offsets[0] == 1 and offsets[-1] == len(data) - 1
    assert encode_message_bundle(decoded)[0] == data  # not a message bundle: the full road


@given(bundle=bundles(), node=nodes, hops=st.integers(1, 3))
def test_forwarding_with_offsets_equals_a_whole_re_encode(
    bundle: object, node: int, hops: int
) -> None:
    data = encode_bundle(bundle)  # type: ignore[arg-type]
    for hop in range(hops):
        decoded, offsets = decode_bundle_offsets(data)
        try:
            expected = for_next_hop(decoded, node + hop)
        except Exception as exc:  # the hop limit: both roads refuse alike
            with pytest.raises(type(exc)):
                forward_bytes(decoded, data, node + hop, offsets)
            return
        assert forward_bytes(decoded, data, node + hop, offsets) == expected
        assert forward_bytes(decoded, data, node + hop) == expected
        data = expected


@given(limit=st.integers(0, 300), count=st.integers(0, (1 << 64) - 1), junk=st.binary(max_size=6))
def test_memoised_hop_count_decoding_equals_a_fresh_one(
    limit: int, count: int, junk: bytes
) -> None:
    from fleetwire.protocol.bpv7.wire import uint

    for data in (b"\x82" + uint(limit) + uint(count), junk, b"\x82" + uint(limit) + junk):
        for _ in range(2):  # the second call may come from the memo
            try:
                fresh = ext._decode_hop_count(data, 5)
            except BundleError as exc:
                with pytest.raises(BundleError) as caught:
                    ext.decode_hop_count(data, 5)
                assert (caught.value.code, caught.value.block) == (exc.code, exc.block)
            else:
                assert ext.decode_hop_count(data, 5) == fresh


@given(node=st.integers(0, 1 << 33), service=st.integers(0, (1 << 64) - 1), junk=st.binary(max_size=8))
def test_memoised_previous_node_decoding_equals_a_fresh_one(
    node: int, service: int, junk: bytes
) -> None:
    from fleetwire.protocol.bpv7.wire import uint

    for data in (b"\x82\x02\x82" + uint(node) + uint(service), junk):
        for _ in range(2):
            try:
                fresh = ext._decode_previous_node(data, 6)
            except BundleError as exc:
                with pytest.raises(BundleError) as caught:
                    ext.decode_previous_node(data, 6)
                assert caught.value.code == exc.code
            else:
                assert ext.decode_previous_node(data, 6) == fresh


_texts = st.one_of(st.text(max_size=12), st.just("ipn:5.7"), st.integers(), st.none())
_blobs = st.one_of(st.binary(max_size=8), st.none(), st.text(max_size=3))
_times = st.one_of(st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=False), st.none())


@given(
    st.tuples(_blobs, _blobs, _texts, _texts, _times, _times, _blobs, _texts, _texts)
)
def test_records_built_by_the_agent_equal_checked_ones(args: tuple[object, ...]) -> None:
    try:
        expected = StoredBundle(*args)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            StoredBundle.checked_by_caller(*args)  # type: ignore[arg-type]
        return
    assert StoredBundle.checked_by_caller(*args) == expected  # type: ignore[arg-type]
