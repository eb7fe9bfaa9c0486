"""The wire forms of the ledger, digests and isolation orders against their CDDL (RFC 8610), with an
independent validator: what we write validates, what the CDDL refuses our readers refuse too."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from cddl_verifier import Validator, schema_diagnostics
from fleetwire.protocol import cbor
from fleetwire.protocol.coordination import digests, isolation, ledger
from fleetwire.protocol.coordination.digests import Digest, DigestBuilder, KeepDetail, MetricSpec
from fleetwire.protocol.coordination.isolation import IsolationOrder, OrderAction, Target
from fleetwire.protocol.coordination.ledger import Ledger
from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.messages import Scope
from hypothesis import given, settings
from hypothesis import strategies as st

SCHEMAS = {"ledger": ledger.CDDL, "digest": digests.CDDL, "isolation-order": isolation.CDDL}


@cache
def validator(rule: str) -> Validator:
    source = digests.CDDL if rule == "detail" else SCHEMAS[rule]
    return Validator(source)


def valid(data: bytes, rule: str) -> bool:
    return validator(rule).validate(data, root_type=rule, require_deterministic=True).valid


@pytest.mark.parametrize("rule", sorted(SCHEMAS))
def test_schemas_are_valid_cddl(rule: str) -> None:
    assert schema_diagnostics(SCHEMAS[rule]) == ()


@settings(max_examples=50)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**64 - 1),
            st.text(min_size=1, max_size=20),
            st.integers(0, 2**64 - 1),
            st.integers(0, 2**64 - 1),
        ),
        max_size=8,
    )
)
def test_ledger_encodings_validate(entries: list[tuple[int, str, int, int]]) -> None:
    books = Ledger()
    for node, resource, produced, consumed in entries:
        replica = Ledger(owner=node)
        replica.record(node, resource, produced=produced, consumed=consumed)
        books.merge(replica)
    assert valid(books.to_cbor(), "ledger")


@settings(max_examples=50)
@given(st.lists(st.tuples(st.sampled_from(["t", "p"]), st.integers(-(2**53), 2**53)), max_size=40))
def test_digest_and_detail_encodings_validate(samples: list[tuple[str, int]]) -> None:
    builder = DigestBuilder(
        3, {"t": MetricSpec(edges=(0, 10)), "p": MetricSpec(center=0, sigma=5)}, 1000, 0
    )
    actions: list[Any] = []
    for i, (name, value) in enumerate(samples):
        actions += builder.observe(name, value, i)
    actions += builder.tick(10_000)
    for action in actions:
        if isinstance(action, KeepDetail):
            assert valid(action.data, "detail")
        else:
            assert valid(action.digest.to_cbor(), "digest")


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.sampled_from(OrderAction),
    st.sampled_from([Scope.CELL, Scope.REGION]),
    st.none() | st.text(min_size=1, max_size=50),
)
def test_order_encodings_validate(
    issuer: int, at: int, action: OrderAction, scope: Scope, reason: str | None
) -> None:
    order = IsolationOrder(issuer, at, 1, action, Target(scope, 7), reason)
    assert valid(order.to_payload(), "isolation-order")


OUTSIDE: list[tuple[str, Any]] = [
    ("ledger", {1: {7: {"r": [1]}}}),
    ("ledger", {1: {7: {}}}),
    ("ledger", {1: {7: {"": [1, 2]}}}),
    ("ledger", {2: {}}),
    ("digest", {0: 1, 1: 1, 2: 2, 3: 2, 4: {}}),
    ("digest", {0: 1, 1: 1, 2: 2, 3: 0, 4: {}, 5: []}),
    ("digest", {0: 1, 1: 1, 2: 2, 3: 0, 4: {"t": {0: 1}}}),
    ("isolation-order", {1: 1, 2: 1, 3: 1, 4: 0, 5: 0, 6: 1}),
    ("isolation-order", {1: 1, 2: 1, 3: 1, 4: 0, 5: 1, 6: 1, 7: ""}),
    ("isolation-order", {1: 1, 2: 1, 3: 1, 4: 3, 5: 1, 6: 1}),
]


@pytest.mark.parametrize(("rule", "value"), OUTSIDE)
def test_what_the_cddl_refuses_the_readers_refuse(rule: str, value: Any) -> None:
    data = cbor.encode(value)
    assert not valid(data, rule)
    reader = {
        "ledger": Ledger.from_cbor,
        "digest": Digest.from_cbor,
        "isolation-order": IsolationOrder.from_payload,
    }[rule]
    with pytest.raises(FleetwireError):
        reader(data)
