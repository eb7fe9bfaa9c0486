"""Random mutations of valid messages into the decoder: only typed errors, and whatever is
accepted re-encodes to exactly its bytes (one content, one id).

A plain seeded fuzzer beside the hypothesis tests: it stacks several edits (overwrite, cut,
insert, append) on real encodings, which reaches nested maps with odd keys, truncated heads
and shifted lengths that single mutations seldom do. The C reader, where built, must agree.
A short run by default; ``--soak`` runs a long one.
"""

from __future__ import annotations

import random

import pytest
from fleetwire.protocol.errors import DecodeError, MessageError
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    PROTOCOL_VERSION,
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    LeaseGrant,
    Message,
    Scope,
    Terms,
    codec,
    decode_message,
    encode_message,
)

CID = ContentId.of(b"seed")
HEADER = Header(issuer=4711, issued_at=820_000_000_000, sequence=42, references=(CID,))
SEEDS = [
    encode_message(message)
    for message in (
        CapabilityAdvertisement(
            header=HEADER,
            capabilities=(Capability("refine/carbonaceous", 40_000, "kg", 1, 2**40),),
            versions=(1, 1),
            lineage="B",
            cell=17,
        ),
        LeaseGrant(HEADER, "cell-3/dock-2", 4712, CID, 1_000_017, 7_200_000, 2**41),
        Commitment(
            HEADER, CommitmentState.OFFERED, Terms(1, 2, "deliver", 120, "t", 2**40, (CID,))
        ),
        ExceptionReport(HEADER, 1, 3, Scope.CELL, 17, (CID,), CID, "thermal"),
    )
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(out) + 1)
        op = rng.random()
        if op < 0.5 and out:
            out[min(where, len(out) - 1)] = rng.randrange(256)
        elif op < 0.7 and out:
            del out[where : where + rng.randint(1, 8)]
        elif op < 0.9:
            out[where:where] = rng.randbytes(rng.randint(1, 9))
        else:
            out += rng.randbytes(rng.randint(1, 5))
    return bytes(out)


def refused_after_reading(message: Message) -> bool:
    """Whether a rule decode_message applies after the C reader refuses ``message``."""
    header = message.header
    if header.critical or not 1 <= header.min_version <= min(header.version, PROTOCOL_VERSION):
        return True
    try:
        getattr(message, "check", lambda: None)()
    except MessageError:
        return True
    return False


def fuzz(seed: int, rounds: int) -> None:
    rng = random.Random(seed)
    fast_read = codec._fast_read
    for _ in range(rounds):
        data = mutate(rng, rng.choice(SEEDS))
        fast = fast_read(data) if fast_read is not None else None
        try:
            message = decode_message(data)
        except (DecodeError, MessageError):
            message = None
        if message is not None:
            assert encode_message(message) == data, data.hex()
        if fast is not None:  # the C reader agrees, or a later rule refuses what it read
            assert fast == message or (message is None and refused_after_reading(fast)), data.hex()


def test_mutated_messages_short_run() -> None:
    fuzz(seed=1, rounds=20_000)


@pytest.mark.soak
def test_mutated_messages_long_run() -> None:
    fuzz(seed=2, rounds=500_000)
