"""Version 1 messages: round trips, one content one id, field-naming rejections, version window."""

from __future__ import annotations

from typing import Any

import attrs
import cbor2
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.errors import (
    DecodeError,
    FleetwireError,
    LocalProtocolError,
    MessageError,
    NonDeterministicEncoding,
    UnknownCriticalField,
    UnsupportedVersion,
)
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    Header,
    LeaseClaim,
    Message,
    Terms,
    UnknownMessageType,
    content_id,
    decode_message,
    encode_message,
)
from hypothesis import given
from hypothesis import strategies as st

from .strategies import messages

HEADER = Header(issuer=7, issued_at=817_000_000_000, sequence=3)
CID = ContentId.of(b"the offer")
CLAIM = LeaseClaim(header=HEADER, resource="feedstock/2026-XY/volume-3", term_ms=3_600_000, priority=2)


def wire(message: Message) -> dict[int, Any]:
    value: dict[int, Any] = cbor2.loads(encode_message(message))
    return value


@given(messages)
def test_roundtrip(message: Message) -> None:
    data = encode_message(message)
    assert decode_message(data) == message


@given(messages)
def test_fast_encoder_writes_core_deterministic_cbor(message: Message) -> None:
    data = encode_message(message)
    cbor.scan(data, cbor.DEFAULT_LIMITS)  # the strict §4.2.1 scanner agrees
    assert cbor.encode(cbor2.loads(data)) == data


@given(messages)
def test_content_id_is_stable(message: Message) -> None:
    data = encode_message(message)
    again = decode_message(data)
    assert content_id(again) == content_id(message) == ContentId.of(data)


@given(messages, st.data())
def test_mutated_messages_raise_only_typed_errors(message: Message, data: st.DataObject) -> None:
    encoded = bytearray(encode_message(message))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decoded = decode_message(bytes(encoded))
    except FleetwireError:
        return
    assert encode_message(decoded) == bytes(encoded)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_typed_errors(data: bytes) -> None:
    try:
        decode_message(data)
    except FleetwireError:
        pass


def test_known_bytes_of_a_lease_claim() -> None:
    # Hand-checked against RFC 8949: map(9) 0:4 1:1 2:1 3:7 4:uint64 5:3 8:text(26) 9:3600000 10:2
    assert encode_message(CLAIM).hex() == (
        "a9000401010201030704" "1b000000be38feaa00" "0503" "08781a"
        + b"feedstock/2026-XY/volume-3".hex()
        + "091a0036ee80" "0a02"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda m: m.pop(8), "resource"),
        (lambda m: m.update({9: -1}), "term_ms"),
        (lambda m: m.update({9: "soon"}), "term_ms"),
        (lambda m: m.update({8: "x" * 300}), "resource"),
        (lambda m: m.update({3: b"node"}), "header.issuer"),
        (lambda m: m.update({6: [b"\x12\x20" + b"\x00" * 31]}), "header.references[0]"),
        (lambda m: m.update({6: [b"\x99\x20" + b"\x00" * 32]}), "header.references[0]"),
    ],
)
def test_invalid_fields_are_named(change: Any, field: str) -> None:
    raw = wire(CLAIM)
    change(raw)
    with pytest.raises(MessageError) as info:
        decode_message(cbor.encode(raw))
    assert info.value.field == field


def test_nested_field_errors_name_the_path() -> None:
    offer = Commitment(
        header=HEADER,
        state=CommitmentState.OFFERED,
        terms=Terms(7, 9, "deliver", 120, "t", 10),
    )
    raw = wire(offer)
    raw[9][0] = "seven"
    with pytest.raises(MessageError, match=r"terms\.promisor"):
        decode_message(cbor.encode(raw))


def test_commitment_state_rules() -> None:
    offer = wire(Commitment(header=HEADER, state=CommitmentState.WITHDRAWN, commitment=CID))
    for state, field in ((CommitmentState.OFFERED, "terms"), (CommitmentState.ACCEPTED, "commitment")):
        bad = Commitment(header=HEADER, state=state)
        # The writer refuses what a reader would refuse, naming the rule's field...
        with pytest.raises(LocalProtocolError, match=f"Commitment: {field}: "):
            encode_message(bad)
        # ...and the reader refuses the same content written by someone else.
        raw = {**offer, 8: int(state)}
        del raw[10]
        with pytest.raises(MessageError) as refused:
            decode_message(cbor.encode(raw))
        assert refused.value.field == field


def test_unknown_non_critical_key_is_kept_and_reencoded() -> None:
    raw = wire(CLAIM)
    raw[30] = {"hint": [1, 2.5]}
    data = cbor.encode(raw)
    message = decode_message(data)
    assert message.extensions == ((30, {"hint": [1, 2.5]}),)
    assert encode_message(message) == data
    assert content_id(message) == ContentId.of(data)


def test_unknown_critical_key_is_refused_with_its_code() -> None:
    raw = wire(CLAIM)
    raw[30] = 1
    raw[7] = [30]
    with pytest.raises(UnknownCriticalField) as info:
        decode_message(cbor.encode(raw))
    assert info.value.code == "critical-field-unknown"


@pytest.mark.parametrize(
    ("reader", "version", "min_version", "error"),
    [
        (1, 3, 2, UnsupportedVersion),
        (3, 5, 4, UnsupportedVersion),
        (3, 2, 3, MessageError),
        (3, 0, 0, UnsupportedVersion),
        (3, 1, 0, MessageError),
    ],
)
def test_version_window(
    reader: int, version: int, min_version: int, error: type[Exception]
) -> None:
    raw = wire(CLAIM)
    raw[1], raw[2] = version, min_version
    with pytest.raises(error):
        decode_message(cbor.encode(raw), version=reader)


def test_newer_writer_readable_at_our_version_is_accepted() -> None:
    raw = wire(CLAIM)
    raw[1], raw[2] = 3, 1  # written at v3, readable by v1
    raw[20] = "v3-only detail"
    message = decode_message(cbor.encode(raw))
    assert message.header.version == 3
    assert message.extensions == ((20, "v3-only detail"),)


def test_unknown_type_is_refused() -> None:
    raw = wire(CLAIM)
    raw[0] = 99
    with pytest.raises(UnknownMessageType):
        decode_message(cbor.encode(raw))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.replace(bytes.fromhex("0503"), bytes.fromhex("051803")),  # sequence 3 in 2 bytes
        lambda d: b"\xbf" + d[1:] + b"\xff",  # indefinite-length map
    ],
)
def test_non_deterministic_bytes_are_refused(mangle: Any) -> None:
    with pytest.raises((DecodeError, MessageError)):
        decode_message(mangle(encode_message(CLAIM)))


def test_keys_out_of_order_are_refused() -> None:
    raw = wire(CLAIM)
    shuffled = dict(reversed(list(raw.items())))
    with pytest.raises(NonDeterministicEncoding, match="out of bytewise order"):
        decode_message(cbor2.dumps(shuffled))


def test_empty_optional_list_written_out_is_refused() -> None:
    raw = wire(CLAIM)
    raw[6] = []
    with pytest.raises(MessageError, match="left out") as info:
        decode_message(cbor.encode(raw))
    assert info.value.field == "header.references"


@given(messages)
def test_json_form_roundtrips(message: Message) -> None:
    from fleetwire.protocol.messages.text import message_from_json, message_to_json

    assert message_from_json(message_to_json(message)) == attrs.evolve(message, extensions=())


def test_json_form_names_bad_fields() -> None:
    from fleetwire.protocol.messages.text import message_from_json

    with pytest.raises(MessageError, match="term_ms"):
        message_from_json({"type": "lease-claim", "resource": "dock/7"}, HEADER)
    with pytest.raises(MessageError, match="unknown fields"):
        message_from_json({"type": "lease-claim", "resource": "d", "term_ms": 1, "colour": 1}, HEADER)
    with pytest.raises(MessageError, match="type"):
        message_from_json({"type": "lease-bid"}, HEADER)


def test_unknown_keys_of_mixed_types_in_a_nested_map_are_named_not_a_crash() -> None:
    # Found by fuzzing: sorting the unknown keys of a hostile nested map compared str with int.
    advert = CapabilityAdvertisement(
        header=HEADER,
        capabilities=(Capability("refine", 1, "kg", 0, 1),),
        versions=(1, 1),
        lineage="B",
    )
    raw = wire(advert)
    raw[8][0].update({"x": 1, 99: 2})
    with pytest.raises(MessageError) as refused:
        decode_message(cbor.encode(raw))
    assert refused.value.field == "capabilities[0]"
    assert "unknown keys [99, 'x']" in refused.value.reason
