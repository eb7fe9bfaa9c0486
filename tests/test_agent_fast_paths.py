"""The agent's fast paths give exactly what the reference paths give (property tests).

Each shortcut the agent takes on its per-hop road has a slower reference it must equal byte
for byte: :func:`encode_message_bundle` against :func:`encode_bundle`, :func:`forward_bytes`
with the decoder's block offsets against a whole re-encode (:func:`for_next_hop`),
:func:`decode_bundle_offsets` against a scan of the bytes, the memoised extension-block
decoders against a fresh decoding, and :meth:`StoredBundle.checked_by_caller` against the
checked constructor.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from fleetwire.protocol import cose
from fleetwire.protocol.agent import bundling
from fleetwire.protocol.agent import store as store_module
from fleetwire.protocol.agent.bundling import (
    _id_key,
    _offsets,
    encode_message_bundle,
    for_next_hop,
    forward_bytes,
    inspect_bundle,
    message_bundle,
)
from fleetwire.protocol.agent.store import StoredBundle
from fleetwire.protocol.bpv7 import (
    BlockType,
    Bundle,
    BundleError,
    BundleFlags,
    CanonicalBlock,
    CreationTimestamp,
    InvalidBundle,
    IpnEid,
    PrimaryBlock,
    decode_bundle,
    decode_bundle_offsets,
    encode_bundle,
    payload_block,
)
from fleetwire.protocol.bpv7 import accel as bundle_accel
from fleetwire.protocol.bpv7 import extensions as ext
from fleetwire.protocol.bpv7.crc import CrcType
from hypothesis import example, given
from hypothesis import strategies as st

from tests.test_bpv7_bundle import bundles, eids

U32 = (1 << 32) - 1
nodes = st.one_of(st.integers(0, 300), st.integers(0, U32))
reports = st.one_of(
    st.sampled_from([BundleFlags.NONE, BundleFlags.REPORT_DELIVERY,
                     BundleFlags.REPORT_RECEPTION | BundleFlags.REPORT_FORWARDING]),
    st.integers(0, 0x7FFFFF).map(BundleFlags),
)  # fmt: skip


@given(
    envelope=st.binary(max_size=400), source=nodes, destination=nodes,
    created=st.one_of(st.integers(0, 1 << 50), st.integers(-3, 1 << 66)),
    sequence=st.one_of(st.integers(0, 1 << 40), st.integers(-3, 1 << 66)),
    lifetime=st.one_of(st.integers(1, 1 << 40), st.integers(-3, 1 << 66)),
    service=st.integers(0, 1 << 20), flags=reports,
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


@given(
    node=st.integers(0, 1 << 33), service=st.integers(0, (1 << 64) - 1), junk=st.binary(max_size=8)
)
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


@given(st.tuples(_blobs, _blobs, _texts, _texts, _times, _times, _blobs, _texts, _texts))
def test_records_built_by_the_agent_equal_checked_ones(args: tuple[object, ...]) -> None:
    try:
        expected = StoredBundle(*args)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            StoredBundle.checked_by_caller(*args)  # type: ignore[arg-type]
        return
    assert StoredBundle.checked_by_caller(*args) == expected  # type: ignore[arg-type]


_made_ids = st.binary(min_size=1, max_size=8)
_made_content = st.one_of(st.none(), st.binary(min_size=1, max_size=8))
_made_hops = st.sampled_from([None, "local", "ipn:4.0"])


@given(
    st.tuples(_made_ids, _made_content, _texts, _texts, _times, _times, _blobs, _made_hops, _texts),
    st.booleans(),
)
def test_records_of_decoded_bundles_equal_checked_ones(
    args: tuple[object, ...], setters: bool
) -> None:
    # of_decoded trusts only what accept_record made (the keys, next_hop) and checks the rest:
    # whatever the rest is, the same record as checked_by_caller's, or the same error.
    saved = store_module._FILL
    if setters:
        store_module._FILL = None
    try:
        try:
            expected = StoredBundle.checked_by_caller(*args)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            with pytest.raises(type(exc)):
                StoredBundle.of_decoded(*args)  # type: ignore[arg-type]
            return
        got = StoredBundle.of_decoded(*args)  # type: ignore[arg-type]
        assert got == expected and repr(got) == repr(expected)
    finally:
        store_module._FILL = saved


def _decoded(data: bytes, common: bool) -> object:
    try:
        return decode_bundle_offsets(data, common=common)
    except BundleError as exc:
        return ("refused", exc.code, exc.block)


@given(
    bundle=st.one_of(
        bundles(),
        st.builds(
            lambda envelope, a, b, t: message_bundle(
                envelope, source=a, destination=b, created_at=t, sequence=0, lifetime_ms=9
            ),
            st.binary(max_size=70_000).filter(lambda e: len(e) < 30 or len(e) > 250),
            nodes, nodes, st.integers(1, 1 << 40),
        ),
    ),
    flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=3),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)  # fmt: skip
def test_one_pass_block_readers_decide_as_the_general_ones(
    bundle: object, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(encode_bundle(bundle))  # type: ignore[arg-type]
    for where, value in flips:  # damage: other bytes, other shapes, CRCs that fail
        data[where % len(data)] = value
    damaged = bytes(data if cut is None else data[: cut % (len(data) + 1)])
    assert _decoded(damaged, True) == _decoded(damaged, False)


# --- the agent's reuse of what reception already computed ----------------------------------


@given(bundles())
def test_the_id_key_shortcut_equals_the_bundle_id_key(bundle: Any) -> None:
    assert _id_key(bundle) == bundle.id.key()


@given(st.binary(max_size=100))
def test_a_payload_sealed_here_is_inspected_as_a_parsed_one(message_bytes: bytes) -> None:
    from fleetwire.protocol.keys import SigningKey

    key = SigningKey.from_seed(bytes(range(32)))
    envelope = cose.sign1(message_bytes, key)
    bundle = message_bundle(envelope, source=5, destination=9, created_at=1, sequence=0,
                            lifetime_ms=1000)  # fmt: skip
    parsed = inspect_bundle(bundle, 0, content_id=False)
    trusted = inspect_bundle(bundle, 0, content_id=False, sealed_here=True)
    assert parsed == trusted and parsed.envelope_digest is not None
    assert parsed.sign1 == cose.parse_sign1(envelope)


@given(
    envelope=st.binary(max_size=300), source=st.integers(1, 1 << 20),
    destination=st.integers(0, 1 << 20), node=nodes, hops=st.integers(1, 4),
    limit=st.integers(1, 5), block_number=st.integers(2, 30),
)  # fmt: skip
def test_forwarding_message_bundles_hop_by_hop_equals_a_whole_re_encode(
    envelope: bytes, source: int, destination: int, node: int, hops: int, limit: int,
    block_number: int,
) -> None:  # fmt: skip
    """The shapes forward_bytes takes in one step (Hop Count + payload on the first hop, then
    Hop Count + Previous Node + payload), with any hop limit and block numbers."""
    from fleetwire.protocol.bpv7 import Bundle, HopCount, hop_count_block

    made = message_bundle(envelope, source=source, destination=destination, created_at=1,
                          sequence=0, lifetime_ms=1000)  # fmt: skip
    bundle = Bundle(made.primary, (hop_count_block(block_number, HopCount(limit)), made.blocks[1]))
    data = encode_bundle(bundle)
    for hop in range(hops):
        decoded, offsets = decode_bundle_offsets(data)
        try:
            expected = for_next_hop(decoded, node + hop)
        except Exception as exc:  # the hop limit: both roads refuse alike
            with pytest.raises(type(exc)):
                forward_bytes(decoded, data, node + hop, offsets)
            return
        assert forward_bytes(decoded, data, node + hop, offsets) == expected
        data = expected


# --- the send path: one message bundle written in one pass ----------------------------------


needs_writer = pytest.mark.skipif(
    bundle_accel.message_bytes is None, reason="the C accelerator is not built, or --pure-python"
)
U64 = (1 << 64) - 1
#: Every defined bundle flag, some unknown bits, and the ones that make a bundle invalid.
bundle_flags = st.one_of(
    st.sampled_from([0, 0x4, 0x2, 0x1, 0x24, 0x4 | 0x4000, 0x2 | 0x20000, 0x7E0064]),
    st.integers(0, 0xFFFFFF), st.integers(0, U64),
)  # fmt: skip
fields = st.one_of(
    st.integers(0, 1 << 40),
    st.integers(0, U64),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 1 << 32]),
)


def _reference(bundle: Bundle) -> tuple[bytes, tuple[int, ...]] | str:
    """encode_bundle's bytes and the decoder's offsets, or the rule it refuses."""
    try:
        data = encode_bundle(bundle)
    except InvalidBundle as exc:
        return exc.code
    return data, decode_bundle_offsets(data)[1]


def _written(bundle: Bundle) -> tuple[bytes, tuple[int, ...]] | type[Exception]:
    primary, creation = bundle.primary, bundle.primary.creation
    assert bundle_accel.message_bytes is not None
    try:
        return bundle_accel.message_bytes(
            primary.flags, primary.destination.wire, primary.source.wire, primary.report_to.wire,
            creation.time, creation.sequence, primary.lifetime, bundling.HOP_LIMIT,
            bundle.blocks[1].data,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:
        return type(exc)


@needs_writer
@given(
    destination=eids, source=eids, report_to=eids, flags=bundle_flags, time=fields,
    sequence=fields, lifetime=fields,
    payload=st.one_of(st.binary(max_size=300), st.binary(min_size=65_530, max_size=65_540)),
)  # fmt: skip
def test_written_message_bundles_equal_the_python_encoder(
    destination: Any, source: Any, report_to: Any, flags: int, time: int, sequence: int,
    lifetime: int, payload: bytes,
) -> None:  # fmt: skip
    """Any EIDs (ipn, dtn, dtn:none), flags, timestamps, lifetimes and payloads: the C bytes
    and offsets are encode_bundle's, and C refuses exactly what encode_bundle refuses."""
    primary = PrimaryBlock(destination, source, report_to, CreationTimestamp(time, sequence),
                           lifetime, flags)  # fmt: skip
    bundle = Bundle(primary, (bundling._NEW_HOPS, payload_block(payload)))
    reference, written = _reference(bundle), _written(bundle)
    if isinstance(reference, str):
        assert written is ValueError, reference
        with pytest.raises(InvalidBundle):  # the agent's road falls back and names the rule
            encode_message_bundle(bundle)
    else:
        assert written == reference
        assert encode_message_bundle(bundle) == reference


@given(
    envelope=st.binary(max_size=400), source=nodes, destination=nodes,
    created=st.one_of(st.integers(0, 1 << 50), st.integers(-3, 1 << 66)),
    sequence=st.one_of(st.integers(0, 1 << 40), st.integers(-3, 1 << 66)),
    lifetime=st.one_of(st.integers(1, 1 << 40), st.integers(-3, 1 << 66)),
    service=st.integers(0, 1 << 20), flags=reports, writer=st.booleans(),
)  # fmt: skip
def test_new_message_equals_message_bundle_encoded(
    envelope: bytes, source: int, destination: int, created: int, sequence: int,
    lifetime: int, service: int, flags: BundleFlags, writer: bool,
) -> None:  # fmt: skip
    """What the agent sends: the same bundle as message_bundle, its encode_bundle bytes and
    offsets, or the same InvalidBundle — with the C writer and on the pure-Python road."""
    options: dict[str, Any] = dict(
        source=source, destination=destination, created_at=created, sequence=sequence,
        lifetime_ms=lifetime, service=service, reports=flags,
    )  # fmt: skip
    bundle = message_bundle(envelope, **options)
    reference = _reference(bundle)
    road = contextlib.nullcontext() if writer else bundle_accel.without_message_bytes()
    with road:
        if isinstance(reference, str):
            with pytest.raises(InvalidBundle) as caught:
                bundling.new_message(envelope, **options)
            assert caught.value.code == reference
            return
        made, data, offsets = bundling.new_message(envelope, **options)
    assert made == bundle
    assert (data, offsets) == reference


@needs_writer
def test_the_pure_python_road_is_taken_without_the_writer() -> None:
    calls: list[object] = []
    real = bundle_accel.message_bytes
    assert real is not None

    def counting(*args: Any) -> tuple[bytes, tuple[int, ...]]:
        calls.append(args)
        return real(*args)

    options: dict[str, Any] = dict(source=1, destination=2, created_at=3, sequence=4, lifetime_ms=5)
    with bundle_accel.without_message_bytes():
        assert bundle_accel.message_bytes is None
        pure = bundling.new_message(b"payload", **options)
    assert bundle_accel.message_bytes is real
    bundle_accel.message_bytes = counting
    try:
        fast = bundling.new_message(b"payload", **options)
    finally:
        bundle_accel.message_bytes = real
    assert len(calls) == 1 and fast == pure


_NODE = IpnEid(5, 7).wire
_GOOD: tuple[Any, ...] = (0, _NODE, _NODE, b"\x82\x01\x00", 1, 0, 1000, 32, b"payload")


@needs_writer
@pytest.mark.parametrize(
    ("index", "value", "error"),
    [
        (0, -1, ValueError), (0, 1 << 64, ValueError), (0, True, TypeError), (0, 1.0, TypeError),
        (0, None, TypeError), (0, 0x1, ValueError),  # a fragment without its fields
        (0, 0x2 | 0x4000, ValueError),  # an administrative record asking for reports
        (1, "ipn:5.7", TypeError), (1, bytearray(_NODE), TypeError), (1, b"", ValueError),
        (1, b"\x82\x02", ValueError), (1, b"\x83\x02\x82\x05\x07", ValueError),
        (1, b"\x82\x03\x00", ValueError), (1, b"\x82\x02" + b"\x00" * 1023, ValueError),
        (1, b"\x82\x02\x82\x05", ValueError), (1, b"\x82\x02\x82\x18\x05\x07", ValueError),
        (1, b"\x82\x02\x82\x05\x07\x00", ValueError), (1, b"\x82\x01\x63ab", ValueError),
        (1, b"\x82\x01\x01", ValueError), (1, b"\x82\x01\x60", ValueError),
        (1, b"\x82\x02\x83\x1b" + b"\x01" * 8 + b"\x05\x07", ValueError),  # allocator > 2**32
        (1, b"\x82\x02\x82\x1c\x05", ValueError),
        (2, b"\x82\x01\x00", ValueError),  # anonymous without must-not-fragment
        (3, 7, TypeError), (4, 0, ValueError),  # creation time 0 needs a Bundle Age block
        (4, 1 << 64, ValueError), (4, -(1 << 70), ValueError), (5, -1, ValueError),
        (5, "1", TypeError), (6, 1 << 80, ValueError), (7, 0, ValueError), (7, 256, ValueError),
        (7, -1, ValueError), (8, bytearray(b"payload"), TypeError), (8, memoryview(b"p"), TypeError),
        (8, None, TypeError),
    ],
)  # fmt: skip
def test_hostile_writer_inputs_raise_typed_errors(index: int, value: Any, error: type) -> None:
    assert bundle_accel.message_bytes is not None
    args = list(_GOOD)
    args[index] = value
    with pytest.raises(error):
        bundle_accel.message_bytes(*args)
    data, offsets = bundle_accel.message_bytes(*_GOOD)  # and the good call still works
    assert decode_bundle_offsets(data)[1] == offsets


@needs_writer
@pytest.mark.parametrize("count", [0, 1, 8, 10, 100])
def test_the_writer_takes_exactly_nine_arguments(count: int) -> None:
    assert bundle_accel.message_bytes is not None
    with pytest.raises(TypeError):
        bundle_accel.message_bytes(*(_GOOD * 12)[:count])


@needs_writer
def test_a_written_bundle_leaves_no_references_behind() -> None:
    import gc
    import sys

    assert bundle_accel.message_bytes is not None
    payload, source = b"p" * 300, IpnEid(70_000, 7).wire
    before = sys.getrefcount(payload), sys.getrefcount(source)
    for _ in range(1000):
        bundle_accel.message_bytes(0x20000, source, source, source, 9, 1, 5, 32, payload)
        with pytest.raises(ValueError):
            bundle_accel.message_bytes(0x20000, source, source, source, 0, 1, 5, 32, payload)
    gc.collect()
    assert (sys.getrefcount(payload), sys.getrefcount(source)) == before


@needs_writer
@given(inner=st.binary(max_size=24), form=st.sampled_from([b"\x82\x02\x82", b"\x82\x02\x83"]))
@example(inner=b"\x05\x07", form=b"\x82\x02\x82")
@example(inner=b"\x1b" + b"\xff" * 8 + b"\x19\x01\x00", form=b"\x82\x02\x82")
@example(inner=b"\x00\x05\x07", form=b"\x82\x02\x83")
@example(inner=b"\x1a\xff\xff\xff\xff\x18\x20\x07", form=b"\x82\x02\x83")
def test_the_writer_takes_only_whole_ipn_eids(inner: bytes, form: bytes) -> None:
    """Any bytes as an EID: refused, or a bundle that decodes with exactly that EID."""
    assert bundle_accel.message_bytes is not None
    wire = form + inner
    try:
        data, offsets = bundle_accel.message_bytes(
            0, wire, _NODE, b"\x82\x01\x00", 1, 0, 9, 32, b""
        )
    except ValueError:
        return
    decoded, decoded_offsets = decode_bundle_offsets(data)
    assert decoded.primary.destination.wire == wire and decoded_offsets == offsets


@given(
    block_type=st.sampled_from([1, True, 1.0, BlockType.PAYLOAD, 10]),
    number=st.sampled_from([1, True, 1.0, 2]),
    flags=st.sampled_from([0, False, 0.0, None, 2]),
    crc=st.sampled_from([2, 2.0, CrcType.CRC32C, CrcType.CRC16, 7]),
    data=st.sampled_from([b"", b"abc", bytearray(b"abc"), "abc"]),
)
def test_message_shaped_bundles_with_odd_fields_encode_as_the_reference(
    block_type: Any, number: Any, flags: Any, crc: Any, data: Any
) -> None:
    """The C road is taken only for fields the reference encoder reads the same way."""
    made = message_bundle(b"", source=5, destination=9, created_at=1, sequence=0, lifetime_ms=9)
    bundle = Bundle(
        made.primary, (made.blocks[0], CanonicalBlock(block_type, number, data, flags, crc))
    )
    try:
        reference: object = encode_bundle(bundle)
    except Exception as exc:
        with pytest.raises(type(exc)):
            encode_message_bundle(bundle)
        return
    assert encode_message_bundle(bundle)[0] == reference
