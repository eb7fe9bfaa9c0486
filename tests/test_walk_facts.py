"""The hop's facts from the C walk give exactly what the Python road gives.

:func:`~fleetwire.protocol.agent.bundling.accept_received` (``walk_bundle_facts`` in
``protocol/_walk_facts.h``) may only take bundles the reference road takes, and must then
give the same values: for any bytes, either ``None`` or exactly what
:func:`decode_bundle_offsets`, :func:`accept_record`, :attr:`Bundle.hop_count` and
:attr:`Bundle.previous_node` give without the accelerator (every field of the record, the
expiry, ``local``, the COSE_Sign1, the hop count's verdict, the previous node). Inputs:
bundles in and near the walk's shape (every EID form it reads, creation time zero, times
whose expiry passes 64 bits, hop counts past their limit, Previous Node blocks, payloads
that are, nearly are or are not COSE_Sign1), real message bundles relayed hop after hop,
valid bundles of every shape, rule breakers, damaged bundles and random bytes.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from fleetwire.protocol import cose
from fleetwire.protocol.agent.bundling import (
    accept_received,
    accept_record,
    forward_bytes,
    new_message,
)
from fleetwire.protocol.bpv7 import (
    DTN_NONE,
    CanonicalBlock,
    CreationTimestamp,
    IpnEid,
    PrimaryBlock,
    accel,
    decode_bundle_offsets,
    encode_bundle,
)
from fleetwire.protocol.bpv7.crc import CrcType
from fleetwire.protocol.bpv7.eid import Eid
from fleetwire.protocol.bpv7.errors import BundleError
from fleetwire.protocol.keys import SigningKey
from hypothesis import example, given
from hypothesis import strategies as st

from tests.test_bpv7_accel import damaged, rule_breakers
from tests.test_bpv7_bundle import bundles, raw

needs_c = pytest.mark.skipif(
    accel.walk_facts is None, reason="the C walk with the hop's facts is not built (or is off)"
)

T0 = 820_000_000_000
U64 = (1 << 64) - 1
_KEY = SigningKey.from_seed(bytes(range(32)))
_SIGNED = cose.sign1(b"a fleet message", _KEY)

#: Node numbers an agent may have (and some no walked EID can name).
NODES = st.one_of(
    st.sampled_from([0, 1, 5, 9, 23, 24, (1 << 32) - 1]), st.integers(0, (1 << 32) - 1),
    st.sampled_from([-1, 1 << 32, 1 << 64, 1 << 70]),
)  # fmt: skip
NEIGHBOURS = st.one_of(st.none(), st.integers(0, 2**32))
NOW = st.one_of(st.just(T0), st.integers(0, U64))
_EIDS: st.SearchStrategy[Eid] = st.one_of(
    st.sampled_from([DTN_NONE, IpnEid(0, 0), IpnEid(5, 7), IpnEid(9, 0), IpnEid(3, 2, allocator=1)]),
    st.builds(IpnEid, st.integers(0, (1 << 32) - 1), st.integers(0, U64)),
)  # fmt: skip
_NUMBERS = st.integers(2, 25)
_FLAGS = st.sampled_from([0, 0, 2, 4, 0x10])


@st.composite
def walkable(draw: st.DrawFn) -> bytes:
    """Bundles in (or just outside) the shape the walk reads, with good CRCs."""
    source = draw(_EIDS)
    time = draw(st.sampled_from([0, 1, T0, (1 << 32) - 1, 1 << 32, U64 - 5, U64]))
    primary = PrimaryBlock(
        draw(_EIDS), source, draw(_EIDS),
        CreationTimestamp(time, draw(st.one_of(st.integers(0, 30), st.integers(0, U64)))),
        draw(st.sampled_from([0, 1, 86_400_000, U64])),
        draw(st.sampled_from([0, 4, 2, 6, 0x10, 0x14])) | (4 if source.is_null else 0),
    )  # fmt: skip
    blocks = []
    numbers = iter(draw(st.lists(_NUMBERS, min_size=5, max_size=5, unique=True)))
    if draw(st.booleans()):
        limit = draw(st.sampled_from([1, 2, 32, 255, 256]))
        count = draw(st.sampled_from([0, 1, limit - 1, limit, limit + 1, 300]))
        data = b"\x82" + _uint(limit) + _uint(max(count, 0))
        blocks.append(CanonicalBlock(10, next(numbers), data, draw(_FLAGS)))
    if draw(st.booleans()):
        blocks.append(CanonicalBlock(6, next(numbers), draw(_EIDS).wire, draw(_FLAGS)))
    if time == 0 or draw(st.booleans()):
        blocks.append(
            CanonicalBlock(7, next(numbers), _uint(draw(st.integers(0, U64))), draw(_FLAGS))
        )
    if draw(st.booleans()):
        blocks.append(CanonicalBlock(draw(st.sampled_from([11, 23, 192])), next(numbers),
                                     draw(st.binary(max_size=8)), draw(_FLAGS)))  # fmt: skip
    if draw(st.booleans()):
        blocks = draw(st.permutations(blocks))
    payload = draw(st.one_of(
        st.just(_SIGNED), st.just(_SIGNED[:-1]), st.binary(max_size=200),
        st.binary(max_size=200).map(lambda message: cose.sign1(message, _KEY)),
    ))  # fmt: skip
    crc = draw(st.sampled_from([CrcType.CRC32C] * 5 + [CrcType.CRC16]))
    blocks.append(CanonicalBlock(1, 1, payload, draw(_FLAGS), crc))
    return raw(primary, *blocks)


def _uint(value: int) -> bytes:
    from fleetwire.protocol.bpv7.wire import uint

    return uint(value)


@st.composite
def relayed(draw: st.DrawFn) -> bytes:
    """A real message bundle as the agent sends it, then forwarded through some relays."""
    _, data, offsets = new_message(
        draw(st.one_of(st.just(_SIGNED), st.binary(max_size=100))),
        source=draw(st.sampled_from([1, 5, (1 << 32) - 1])),
        destination=draw(st.sampled_from([1, 9, 70_000])),
        created_at=draw(st.sampled_from([1, T0, U64 - 1])), sequence=draw(st.integers(0, 300)),
        lifetime_ms=draw(st.sampled_from([1, 86_400_000, U64])),
    )  # fmt: skip
    for relay in draw(st.lists(st.integers(0, (1 << 32) - 1), max_size=4)):
        bundle, offsets = decode_bundle_offsets(data)
        data = forward_bytes(bundle, data, relay, offsets)
    return data


def reference(data: bytes, now: int, this_node: int, received_from: int | None) -> Any:
    """What the agent's receive reads of ``data`` on the Python road: the same tuple, or
    the error that refuses the bundle."""
    with accel.without_walk():
        try:
            bundle, offsets = decode_bundle_offsets(data)
        except BundleError as exc:
            return ("error", exc.code)
        record, expires_at, local, sign1 = accept_record(
            bundle, data, now, this_node, received_from
        )
        hops = bundle.hop_count
        previous = bundle.previous_node
    return (
        bundle, offsets, record, expires_at, local, sign1,
        hops is not None and hops.count > hops.limit,
        (previous.node,) if isinstance(previous, IpnEid) else (),
    )  # fmt: skip


def check(data: bytes, now: int, this_node: int, received_from: int | None) -> bool:
    """The fast road agrees with the reference wherever it answers; whether it answered."""
    fast = accept_received(data, now, this_node, received_from)
    if fast is None:
        return False
    slow = reference(data, now, this_node, received_from)
    assert fast == slow
    # Field by field and type by type too (== on the record would let 1 == True pass).
    record, slow_record = fast[2], slow[2]
    for field in attrs.fields(type(record)):
        mine, theirs = getattr(record, field.name), getattr(slow_record, field.name)
        assert (mine, type(mine)) == (theirs, type(theirs)), field.name
    assert [type(value) for value in fast] == [type(value) for value in slow]
    return True


@needs_c
@given(walkable(), NOW, NODES, NEIGHBOURS, st.booleans())
@example(raw(PrimaryBlock(IpnEid(9, 7), DTN_NONE, DTN_NONE, CreationTimestamp(0, 0), 1, 4),
             CanonicalBlock(7, 2, b"\x05"), CanonicalBlock(1, 1, _SIGNED)),
         T0, 9, None, True)  # fmt: skip
@example(raw(PrimaryBlock(IpnEid(9, 7), IpnEid(5, 7), DTN_NONE, CreationTimestamp(U64, 0), 9),
             CanonicalBlock(1, 1, b"x")), T0, 9, 3, True)  # fmt: skip
def test_walkable_bundles_agree(
    data: bytes, now: int, this_node: int, received_from: int | None, here: bool
) -> None:
    if here and accept_received(data, now, this_node) is not None:
        destination = reference(data, now, this_node, None)[0].primary.destination
        if isinstance(destination, IpnEid):
            this_node = destination.node  # the bundle is local to the node that reads it
    check(data, now, this_node, received_from)


@needs_c
@given(relayed(), NOW, NODES, NEIGHBOURS)
def test_relayed_message_bundles_are_taken_and_agree(
    data: bytes, now: int, this_node: int, received_from: int | None
) -> None:
    assert check(data, now, this_node, received_from)  # the commonest bundles: taken


@needs_c
@given(st.one_of(bundles().map(encode_bundle), rule_breakers(), damaged(),
                 st.binary(max_size=200).map(lambda tail: b"\x9f" + tail)),
       NOW, NODES, NEIGHBOURS)  # fmt: skip
def test_any_bytes_are_left_to_python_or_agree(
    data: bytes, now: int, this_node: int, received_from: int | None
) -> None:
    if not check(data, now, this_node, received_from):
        return
    # Taken: so the reference took it too (C never takes what Python refuses).
    assert reference(data, now, this_node, received_from)[0] != "error"


@needs_c
def test_the_facts_road_takes_the_agents_bundles() -> None:
    _, data, _ = new_message(_SIGNED, source=5, destination=9, created_at=T0, sequence=3,
                             lifetime_ms=86_400_000)  # fmt: skip
    fast = accept_received(data, T0, 9, 5)
    assert fast is not None  # or every comparison would test Python against itself
    assert fast[4] is True and fast[5] is not None and fast[7] == ()
    assert check(data, T0, 9, 5)
    bundle, offsets = decode_bundle_offsets(data)
    forwarded = forward_bytes(bundle, data, 77, offsets)
    assert accept_received(forwarded, T0, 9)[7] == (77,)  # type: ignore[index]


def test_without_the_walk_the_facts_road_is_off() -> None:
    # The pure-Python road (conftest's --pure-python enters without_walk): accept_received
    # answers None, so the agent decodes and accepts through the reference road.
    _, data, _ = new_message(_SIGNED, source=5, destination=9, created_at=T0, sequence=3,
                             lifetime_ms=86_400_000)  # fmt: skip
    with accel.without_walk():
        assert accel.walk_facts is None
        assert accept_received(data, T0, 9) is None
    with accel.without_walk_facts():
        assert accept_received(data, T0, 9) is None


def test_a_bundle_over_the_size_limit_is_left_to_python() -> None:
    from fleetwire.protocol.bpv7.bundle import BUNDLE_LIMITS

    _, data, _ = new_message(bytes(BUNDLE_LIMITS.max_size), source=5, destination=9,
                             created_at=T0, sequence=3, lifetime_ms=1)  # fmt: skip
    assert accept_received(data, T0, 9) is None
    assert reference(data, T0, 9, None)[0] == "error"


@needs_c
@given(st.binary(max_size=40), st.integers(-2, 40), NODES)
def test_the_c_function_answers_or_refuses_its_arguments_plainly(
    data: bytes, tag: int, this_node: int
) -> None:
    from fleetwire.protocol.bpv7.bundle import _DEFAULT_WALK_SPEC

    walk = accel.walk_facts
    assert walk is not None
    try:
        walk(_DEFAULT_WALK_SPEC, b"\x9f" + data, tag, this_node)
    except ValueError:
        assert not 0 <= tag <= 32
    with pytest.raises(TypeError):
        walk(_DEFAULT_WALK_SPEC, bytearray(data), 16, 1)  # type: ignore[arg-type]


@needs_c
@given(
    st.lists(st.tuples(st.one_of(relayed(), walkable()), st.sampled_from([None, 1, 2, 3])),
             min_size=1, max_size=4),
    st.sampled_from([1, 2, 3, 9]),
)  # fmt: skip
def test_an_agent_receives_alike_on_both_roads(
    received: list[tuple[bytes, int | None]], node: int
) -> None:
    # The whole receive step, routing included (the previous node is left out): the same
    # actions, stats and store on the facts road as on the reference road.
    from tests.test_agent import agent

    fast, slow = agent(node), agent(node)
    for peer in (1, 2, 3):
        fast.link_up(peer, T0)
        slow.link_up(peer, T0)
    for data, link in received:
        got = fast.receive(data, link, T0)
        with accel.without_walk_facts():
            want = slow.receive(data, link, T0)
        assert got == want
    assert fast.stats == slow.stats
    assert {key: fast.held_state(key) for key in fast._held} == {
        key: slow.held_state(key) for key in slow._held
    }
