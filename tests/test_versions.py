"""The version machinery (protocol/messages/versions.py): conversion between versions, reading
as an older implementation would, the window, and per-peer versions from advertisements."""

from __future__ import annotations

from typing import Any

import attrs
import cbor2
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.errors import (
    LocalProtocolError,
    MessageError,
    UnknownCriticalField,
    UnsupportedVersion,
)
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    MESSAGE_CLASSES,
    SUPPORTED_VERSIONS,
    Award,
    Bid,
    BlockGrant,
    BlockRelease,
    BlockRenew,
    BlockRequest,
    CapabilityAdvertisement,
    Digest,
    ExceptionReport,
    Header,
    LeaseClaim,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
    Message,
    MessageType,
    NoCommonVersion,
    NotExpressible,
    PeerVersions,
    Scope,
    Stats,
    Trigger,
    UnknownMessageType,
    convert,
    decode_any,
    decode_message,
    encode_at,
    encode_message,
    in_window,
)
from fleetwire.protocol.messages.versions import DOWN_CONVERSIONS, window
from hypothesis import given
from hypothesis import strategies as st

T0 = 817_000_000_000
CLAIM_ID = ContentId.of(b"the claim")


def header(version: int, min_version: int | None = None, **values: Any) -> Header:
    return Header(
        issuer=7,
        issued_at=T0,
        sequence=3,
        version=version,
        min_version=version if min_version is None else min_version,
        **values,
    )


def report(**values: Any) -> ExceptionReport:
    fields: dict[str, Any] = {
        "header": header(2, 1),
        "code": 1,
        "severity": 3,
        "scope": Scope.NODE,
        "scope_id": 7,
        "lineage": "B",
    }
    fields.update(values)
    return ExceptionReport(**fields)


# --- the window -----------------------------------------------------------------------------


def test_window_is_n_minus_two() -> None:
    assert list(window(1)) == [1]
    assert list(window(3)) == [1, 2, 3]
    assert list(window(5)) == [3, 4, 5]
    pairs = {(w, r) for w in range(1, 6) for r in range(1, 6) if in_window(w, r)}
    assert (1, 3) in pairs and (3, 1) in pairs and (3, 3) in pairs
    assert (1, 4) not in pairs and (4, 1) not in pairs and (5, 2) not in pairs
    assert not in_window(0, 1)


def test_a_reader_pinned_at_one_refuses_what_version_one_refuses() -> None:
    digest = digest_message()
    data = encode_message(digest)
    assert decode_any(data, 3) == digest
    assert decode_any(data, 2) == digest
    with pytest.raises(UnsupportedVersion) as info:  # min_version 2: needs a newer reader
        decode_any(data, 1)
    assert (info.value.code, info.value.field) == ("version-unsupported", "header.min_version")
    # A type version 1 never had, under a header a v1 reader accepts: not known at v1.
    raw = cbor2.loads(data)
    raw[1], raw[2] = 2, 1
    with pytest.raises(UnknownMessageType) as unknown:
        decode_any(cbor.encode(raw), 1)
    assert unknown.value.code == "message-type-unknown"
    assert decode_any(cbor.encode(raw), 2).header.min_version == 1


def test_reading_as_a_version_outside_the_implementation_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        decode_any(encode_message(report()), 4)
    with pytest.raises(LocalProtocolError):
        decode_message(encode_message(report()), version=0)


# --- the Done-when line: a v4 message from the future ----------------------------------------


def v4_claim(critical: bool) -> bytes:
    """A lease claim written at version 4, readable from 1, with a key 40 v4 added."""
    raw = cbor2.loads(encode_message(LeaseClaim(header(1), "dock/7", 60_000)))
    raw[1], raw[2] = 4, 1
    raw[40] = "v4-only restriction"
    if critical:
        raw[7] = [40]
    return cbor.encode(raw)


@pytest.mark.parametrize("reader", [1, 2, 3])
def test_a_v4_message_with_an_unknown_critical_key_is_refused(reader: int) -> None:
    with pytest.raises(UnknownCriticalField) as info:
        decode_any(v4_claim(critical=True), reader)
    assert (info.value.code, info.value.field) == ("critical-field-unknown", "header.critical")


@pytest.mark.parametrize("reader", [1, 2, 3])
def test_a_v4_message_without_critical_keys_is_read_by_our_rules(reader: int) -> None:
    data = v4_claim(critical=False)
    message = decode_any(data, reader)
    assert isinstance(message, LeaseClaim) and message.resource == "dock/7"
    assert message.header.version == 4 and message.extensions == ((40, "v4-only restriction"),)
    assert encode_message(message) == data  # kept, so it keeps its content id


def test_a_v4_message_that_needs_a_v4_reader_is_refused() -> None:
    raw = cbor2.loads(v4_claim(critical=False))
    raw[2] = 4
    with pytest.raises(UnsupportedVersion):
        decode_any(cbor.encode(raw), 3)


# --- a key added in version 2 (the exception report's lineage) -------------------------------


def test_a_field_is_known_from_the_version_that_added_it() -> None:
    data = encode_message(report())  # written at 2, readable from 1
    assert decode_any(data, 2).lineage == "B"
    as_v1 = decode_any(data, 1)
    assert as_v1.lineage is None and as_v1.extensions == ((15, "B"),)  # type: ignore[union-attr]
    assert encode_message(as_v1) == data
    # A v1 writer's key 15 is an extension even to a v3 reader: it is known "at the message's
    # version" only (protocol.md §5.3).
    v1_report = convert(report(), 1)
    assert v1_report.lineage is None and v1_report.extensions == ((15, "B"),)  # type: ignore[union-attr]
    read = decode_any(encode_message(v1_report), 3)
    assert read.lineage is None and read.extensions == ((15, "B"),)  # type: ignore[union-attr]


def test_a_field_marked_critical_is_refused_by_a_reader_that_predates_it() -> None:
    data = encode_message(report(header=header(2, 1, critical=(15,))))
    assert decode_any(data, 2).lineage == "B"
    with pytest.raises(UnknownCriticalField):
        decode_any(data, 1)


def test_the_encoder_refuses_what_the_headers_version_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError, match="lineage"):
        encode_message(report(header=header(1)))
    with pytest.raises(LocalProtocolError, match="exists from version 3 on"):
        encode_message(Bid(header(2), "ore", 1, 5))
    # A type written with min_version below its own version: a v2 reader refuses it as an
    # unknown type (so a writer SHOULD NOT, and convert does not), a v3 reader reads it.
    odd = encode_message(Bid(header(3, 2), "ore", 1, 5))
    assert decode_any(odd, 3).header.min_version == 2
    with pytest.raises(UnknownMessageType):
        decode_any(odd, 2)
    with pytest.raises(LocalProtocolError, match="min_version"):
        encode_message(LeaseClaim(header(1, 2), "dock/7", 1))


# --- convert: within a type -------------------------------------------------------------------


def test_convert_down_carries_a_newer_field_as_an_extension_and_back_up() -> None:
    down = convert(report(), 1)
    assert down.header.version == 1 and down.header.min_version == 1
    assert down.extensions == ((15, "B"),) and down.lineage is None  # type: ignore[union-attr]
    up = convert(down, 2)
    assert up == report()
    assert encode_at(report(), 1) == encode_message(down)


def test_convert_up_refuses_an_extension_that_is_not_the_field() -> None:
    odd = attrs.evolve(convert(report(), 1), extensions=((15, 42),))
    assert decode_any(encode_message(odd), 1).extensions == ((15, 42),)  # a v1 reader keeps it
    with pytest.raises(NotExpressible, match="lineage"):
        convert(odd, 2)


def test_convert_refuses_a_critical_key_the_target_does_not_know() -> None:
    with pytest.raises(NotExpressible) as info:
        convert(report(header=header(2, 1, critical=(15,))), 1)
    assert info.value.code == "version-not-expressible" and info.value.version == 1


def test_convert_keeps_min_version_at_the_types_own() -> None:
    digest = digest_message()
    assert convert(digest, 3).header == attrs.evolve(digest.header, version=3)
    claim = LeaseClaim(header(1), "dock/7", 60_000)
    assert convert(claim, 3).header == header(3, 1)


def test_convert_to_an_unsupported_version_is_refused() -> None:
    with pytest.raises(NotExpressible):
        convert(report(), 4)
    with pytest.raises(NotExpressible):
        convert(report(), 0)


# --- convert: the defined down-conversions ----------------------------------------------------


def test_a_v3_bid_for_a_v1_peer_becomes_a_lease_claim() -> None:
    bid = Bid(header(3), "feedstock/3", 1, 40, term_ms=3_600_000)
    claim = convert(bid, 1)
    assert claim == LeaseClaim(header(1), "feedstock/3", 3_600_000)
    assert decode_any(encode_at(bid, 1), 1) == claim
    assert convert(bid, 2) == LeaseClaim(header(2, 1), "feedstock/3", 3_600_000)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (Bid(header(3), "feedstock/3", 2, 40, term_ms=1), "for 2 units"),
        (Bid(header(3), "feedstock/3", 1, 40), "no term_ms"),
        (Bid(header(3, critical=(11,)), "feedstock/3", 1, 40, term_ms=1), "critical"),
        (Bid(header(3), "feedstock/3", 1, 40, term_ms=1, extensions=((30, 1),)), "extension"),
        (Award(header(3), "feedstock/3", 9, 1, 40, 12, T0 + 1), "references none"),
        (Award(header(3, references=(CLAIM_ID,)), "ore", 9, 1, 40, 12, T0 - 1), "expires before"),
    ],
)
def test_what_a_lease_cannot_say_is_refused_not_dropped(message: Message, reason: str) -> None:
    with pytest.raises(NotExpressible, match=reason) as info:
        encode_at(message, 1)
    assert info.value.code == "version-not-expressible"


def test_an_award_for_a_v1_winner_becomes_a_lease_grant() -> None:
    award = Award(header(3, references=(CLAIM_ID,)), "feedstock/3", 9, 1, 40, 12, T0 + 60_000)
    grant = convert(award, 1)
    assert grant == LeaseGrant(
        header(1, references=(CLAIM_ID,)), "feedstock/3", 9, CLAIM_ID, 12, 60_000, T0 + 60_000
    )


def test_a_v2_reservation_grant_for_a_v1_holder_becomes_a_lease_grant() -> None:
    block = BlockGrant(header(2, references=(CLAIM_ID,)), "dock-hours", "b-4", 31, 1, 8, T0 + 5000)
    grant = convert(block, 1)
    assert grant == LeaseGrant(
        header(1, references=(CLAIM_ID,)), "dock-hours", 31, CLAIM_ID, 8, 5000, T0 + 5000
    )
    assert decode_any(encode_at(block, 1), 1) == grant
    with pytest.raises(NotExpressible, match="for 3 units"):
        convert(attrs.evolve(block, amount=3), 1)


def test_the_other_block_messages_have_lease_forms() -> None:
    refs = header(2, references=(CLAIM_ID,))
    assert convert(BlockRequest(header(2), "dock-hours", 1, 900), 1) == LeaseClaim(
        header(1), "dock-hours", 900
    )
    assert convert(BlockRenew(refs, "dock-hours", "b-4", 8, 900), 1) == LeaseRenew(
        header(1, references=(CLAIM_ID,)), "dock-hours", 8, CLAIM_ID, 900
    )
    assert convert(BlockRelease(refs, "dock-hours", "b-4", 8), 1) == LeaseRelease(
        header(1, references=(CLAIM_ID,)), "dock-hours", 8, CLAIM_ID
    )


def test_every_type_without_an_older_form_is_refused_by_name() -> None:
    for cls in MESSAGE_CLASSES.values():
        if cls.SINCE == 1 or cls in DOWN_CONVERSIONS:
            continue
        message = SAMPLES[cls.TYPE]
        with pytest.raises(NotExpressible, match=cls.__name__) as info:
            convert(message, cls.SINCE - 1)
        assert info.value.type_name == cls.__name__


# --- per-peer versions ------------------------------------------------------------------------


def advert(issuer: int, versions: tuple[int, int], sequence: int = 1) -> CapabilityAdvertisement:
    head = Header(issuer=issuer, issued_at=T0, sequence=sequence)
    return CapabilityAdvertisement(head, (), versions, "B")


def test_an_unknown_peer_is_written_to_at_the_oldest_version_of_the_window() -> None:
    peers = PeerVersions(own=3)
    assert peers.write_version(40) == 1
    assert PeerVersions(own=1).write_version(40) == 1


def test_a_peer_is_written_to_at_the_newest_version_both_read() -> None:
    peers = PeerVersions(own=3)
    assert peers.learn(advert(40, (1, 2)))
    assert peers.write_version(40) == 2
    assert peers.learn(advert(40, (2, 5), sequence=2))
    assert peers.write_version(40) == 3
    assert not peers.learn(advert(40, (1, 1), sequence=2))  # not newer: ignored
    assert peers.versions_of(40) == (2, 5)
    assert PeerVersions(own=2).write_version_for([]) == 2  # no reader named: its own


@given(st.sampled_from(SUPPORTED_VERSIONS), st.integers(0, 7), st.integers(0, 7))
def test_one_peer_is_written_to_as_a_group_of_one_would_be(
    own: int, oldest: int, newest: int
) -> None:
    # write_version's own road for a peer heard from against write_version_for([peer]):
    # the same version, or the same refusal (even for a range that is empty or out of reach).
    peers = PeerVersions(own=own)
    peers.learn(advert(40, (oldest, newest)))
    try:
        expected: int | str = peers.write_version_for([40])
    except NoCommonVersion as refusal:
        expected = str(refusal)
    try:
        got: int | str = peers.write_version(40)
    except NoCommonVersion as refusal:
        got = str(refusal)
    assert got == expected


def test_no_common_version_is_a_typed_refusal() -> None:
    pinned = PeerVersions(own=1)
    pinned.learn(advert(40, (3, 5)))
    with pytest.raises(NoCommonVersion) as info:
        pinned.write_version(40)
    assert info.value.code == "version-no-common"
    peers = PeerVersions(own=3)
    peers.learn(advert(40, (2, 3)))
    with pytest.raises(NoCommonVersion):
        peers.write_version_for([40, 41])  # 41 unknown: only 1; 40 reads 2..3


@pytest.mark.parametrize("own", SUPPORTED_VERSIONS)
def test_write_version_answers_as_write_version_for_one_peer(own: int) -> None:
    """write_version (with its short road for a peer not heard from) agrees with the general
    one, in values and in refusals, over every range a peer could advertise (inverted too)."""
    span = range(0, SUPPORTED_VERSIONS[-1] + 3)
    for oldest in span:
        for newest in span:
            peers = PeerVersions(own=own)
            peers.learn(advert(40, (oldest, newest)))
            answers: list[int | str] = []
            for one_road in (True, False):
                try:
                    answers.append(
                        peers.write_version(40) if one_road else peers.write_version_for([40])
                    )
                except NoCommonVersion as exc:
                    answers.append(str(exc))
            assert answers[0] == answers[1], (own, oldest, newest)


def test_a_message_for_a_peer_is_converted_to_its_version() -> None:
    peers = PeerVersions(own=3)
    bid = Bid(header(3), "feedstock/3", 1, 40, term_ms=60_000)
    assert isinstance(peers.convert_for(bid, 40), LeaseClaim)
    peers.learn(advert(40, (1, 3)))
    assert peers.convert_for(bid, 40) == bid


def test_an_own_version_outside_the_implementation_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        PeerVersions(own=4)


# --- every v2 and v3 type: encodes, decodes, refuses at older readers ------------------------


def digest_message() -> Digest:
    stats = Stats(12, -1500, 250, -9, 4, (1, 5, 6), 0, 1800)
    return Digest(
        header(2),
        T0 - 60_000,
        T0,
        Trigger.THRESHOLD,
        (("temp", stats), ("power", attrs.evolve(stats, mean=12))),
        (ContentId.of(b"chunk"),),
    )


def _samples() -> dict[MessageType, Message]:
    from fleetwire.protocol.messages import (
        Ask,
        DetailAnswer,
        DetailRequest,
        EscalationAck,
        EscalationClose,
        IsolationAction,
        IsolationOrder,
        IsolationScope,
        Resolution,
    )

    cid = ContentId.of(b"x")
    two, three = header(2), header(3)
    messages: list[Message] = [
        digest_message(),
        DetailRequest(two, (cid,)),
        DetailAnswer(two, cid, b"\x01\x02"),
        EscalationAck(two, cid),
        EscalationClose(two, cid, Resolution.CONTAINED, "pump swapped"),
        IsolationOrder(two, IsolationAction.SEVER, IsolationScope.CELL, 4, "quarantine"),
        BlockRequest(two, "dock-hours", 3, 900),
        BlockGrant(two, "dock-hours", "b-4", 31, 3, 8, T0 + 5000),
        BlockRenew(two, "dock-hours", "b-4", 8, 900),
        BlockRelease(two, "dock-hours", "b-4", 8),
        Bid(three, "ore", 2, 40),
        Ask(three, "ore", 5, 30),
        Award(three, "ore", 9, 2, 35, 12, T0 + 1),
    ]
    return {message.TYPE: message for message in messages}


SAMPLES = _samples()


def test_every_later_type_has_a_sample() -> None:
    assert set(SAMPLES) == {t for t, cls in MESSAGE_CLASSES.items() if cls.SINCE > 1}


@pytest.mark.parametrize("message", SAMPLES.values(), ids=lambda m: type(m).__name__)
def test_later_types_round_trip_and_are_unknown_before_their_version(message: Message) -> None:
    data = encode_message(message)
    for reader in range(message.SINCE, 4):
        assert decode_any(data, reader) == message
    for reader in range(1, message.SINCE):
        with pytest.raises(UnsupportedVersion):
            decode_any(data, reader)


def test_a_digest_refuses_what_its_table_refuses() -> None:
    raw = cbor2.loads(encode_message(digest_message()))
    raw[11]["temp"][1] = 1 << 63  # mean past int64
    with pytest.raises(MessageError) as info:
        decode_message(cbor.encode(raw))
    assert "temp" in info.value.field
    raw = cbor2.loads(encode_message(digest_message()))
    raw[9] = raw[8] - 1
    with pytest.raises(MessageError) as period:
        decode_message(cbor.encode(raw))
    assert period.value.field == "period_end"
    raw = cbor2.loads(encode_message(digest_message()))
    raw[11][""] = raw[11]["temp"]
    with pytest.raises(MessageError):
        decode_message(cbor.encode(raw))


def test_convert_at_the_messages_own_version_still_moves_a_newer_field() -> None:
    odd = report(header=header(1))  # built at 1 with a v2 field: not writable as it is
    assert convert(odd, 1).extensions == ((15, "B"),)  # type: ignore[union-attr]
    claim = LeaseClaim(header(1), "dock/7", 60_000)
    assert convert(claim, 1) is claim


@pytest.mark.parametrize("message", SAMPLES.values(), ids=lambda m: type(m).__name__)
def test_later_types_are_the_same_with_and_without_the_accelerator(message: Message) -> None:
    from fleetwire.protocol.messages import codec
    from fleetwire.protocol.messages.text import message_from_json, message_to_json

    data = encode_message(message)
    with codec.without_accelerator():
        assert encode_message(message) == data
        slow = [decode_any(data, reader) for reader in range(message.SINCE, 4)]
    assert slow == [decode_any(data, reader) for reader in range(message.SINCE, 4)]
    assert message_from_json(message_to_json(message)) == message  # the JSON view too
