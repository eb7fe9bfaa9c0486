"""The draft wire forms of reservations (spec/v2) and market messages (spec/v3) against their
CDDL, with the independent validator: the key tables in the code and the CDDL say the same."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cddl_verifier import Validator, schema_diagnostics
from fleetwire.protocol.coordination import auction, reservations
from fleetwire.protocol.messages import Header

SPEC = Path(__file__).resolve().parent.parent / "spec"
DRAFTS = [
    (SPEC / "v2" / "reservations.cddl", reservations.DRAFT_WIRE, "reservation-message", 2),
    (SPEC / "v3" / "market.cddl", auction.DRAFT_WIRE, "market-message", 3),
]
HEADER = Header(issuer=7, issued_at=820_000_000_000, sequence=3)
SAMPLES: dict[type, dict[str, Any]] = {
    reservations.BlockRequest: {"pool": "feed/A", "amount": 40, "term_ms": 86_400_000},
    reservations.BlockGrant: {
        "pool": "feed/A",
        "block": "feed/A#1",
        "cell": 7,
        "amount": 40,
        "fencing_token": 1,
        "expires_at": 820_086_400_000,
    },
    reservations.BlockRenew: {
        "pool": "feed/A",
        "block": "feed/A#1",
        "fencing_token": 1,
        "term_ms": 1,
    },
    reservations.BlockRelease: {"pool": "feed/A", "block": "feed/A#1", "fencing_token": 1},
    auction.Bid: {"pool": "dock/1", "quantity": 1, "price": 500},
    auction.Ask: {"pool": "feed/A", "quantity": 30, "price": 20},
    auction.Award: {
        "pool": "dock/1",
        "bidder": 7,
        "quantity": 1,
        "price": 100,
        "fencing_token": 4,
        "expires_at": 820_021_600_000,
    },
}


def encode(table: dict[type, Any], version: int, message: Any) -> bytes:
    code, keys = table[type(message)]
    h = message.header
    data = {0: code, 1: version, 2: version, 3: h.issuer, 4: h.issued_at, 5: h.sequence}
    data |= {key: getattr(message, name) for key, name in keys}
    return cbor2.dumps(data, canonical=True)


@pytest.mark.parametrize(("path", "table", "root", "version"), DRAFTS)
def test_the_draft_cddl_is_well_formed_and_names_every_field(path, table, root, version):
    assert schema_diagnostics(path) == ()
    text = path.read_text()
    for cls, (code, keys) in table.items():
        pattern = r"\n([a-z-]+) = \{\n  header<" + str(code) + r">,\n(.*?)\n\}"
        rule = re.search(pattern, text, re.S)
        assert rule is not None, cls
        lines = rule.group(2).splitlines()
        named = [
            (int(m.group(1)), m.group(2))
            for m in (re.match(r"\s+(\d+): .*; (\w+)", ln) for ln in lines)
            if m
        ]
        assert named == list(keys), cls


@pytest.mark.parametrize(("path", "table", "root", "version"), DRAFTS)
def test_the_code_writes_what_the_draft_cddl_accepts(path, table, root, version):
    validator = Validator(path)
    for cls in table:
        message = cls(header=HEADER, **SAMPLES[cls])
        assert validator.validate(encode(table, version, message), root_type=root).valid, cls
        # A field dropped, or a float in an integer field, is refused.
        data = cbor2.loads(encode(table, version, message))
        key = table[cls][1][-1][0]
        dropped = {k: v for k, v in data.items() if k != key}
        assert not validator.validate(cbor2.dumps(dropped, canonical=True), root_type=root).valid
        floated = data | {key: 1.5}
        assert not validator.validate(cbor2.dumps(floated, canonical=True), root_type=root).valid
