"""Hypothesis strategies for protocol values, shared by the property tests."""

from __future__ import annotations

from typing import Any

from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    LeaseClaim,
    LeaseExpiry,
    LeaseGrant,
    LeaseRelease,
    LeaseRenew,
    LeaseRevoke,
    Message,
    Scope,
    Terms,
)
from hypothesis import strategies as st

uint = st.integers(min_value=0, max_value=2**64 - 1)
small_uint = st.integers(min_value=0, max_value=10**6)
times = st.integers(min_value=0, max_value=2**48)
text = st.text(max_size=30)
cids = st.binary(min_size=1, max_size=64).map(ContentId.of)
cid_lists = st.lists(cids, max_size=4).map(tuple)

headers = st.builds(
    Header,
    issuer=uint,
    issued_at=times,
    sequence=uint,
    references=cid_lists,
    version=st.just(1),
    min_version=st.just(1),
)

capabilities = st.builds(
    Capability, kind=text, capacity=uint, unit=text, valid_from=times, valid_until=times
)
terms = st.builds(
    Terms,
    promisor=uint,
    promisee=uint,
    action=text,
    quantity=uint,
    unit=text,
    deadline=times,
    rests_on=cid_lists,
)


@st.composite
def commitments(draw: Any) -> Commitment:
    state = draw(st.sampled_from(CommitmentState))
    if state is CommitmentState.OFFERED:
        return Commitment(header=draw(headers), state=state, terms=draw(terms))
    return Commitment(
        header=draw(headers),
        state=state,
        commitment=draw(cids),
        reason=draw(st.none() | text),
    )


@st.composite
def version_ranges(draw: Any) -> tuple[int, int]:
    low = draw(st.integers(1, 5))
    return (low, draw(st.integers(low, 8)))


messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(
        CapabilityAdvertisement,
        header=headers,
        capabilities=st.lists(capabilities, max_size=4).map(tuple),
        versions=version_ranges(),
        lineage=text,
        cell=st.none() | uint,
    ),
    commitments(),
    st.builds(
        ExceptionReport,
        header=headers,
        code=uint,
        severity=st.integers(1, 5),
        scope=st.sampled_from(Scope),
        scope_id=uint,
        affects=cid_lists,
        digest=st.none() | cids,
        detail=st.none() | text,
    ),
    st.builds(LeaseClaim, header=headers, resource=text, term_ms=uint, priority=uint),
    st.builds(
        LeaseGrant,
        header=headers,
        resource=text,
        holder=uint,
        claim=cids,
        fencing_token=uint,
        term_ms=uint,
        expires_at=times,
    ),
    st.builds(LeaseRenew, header=headers, resource=text, fencing_token=uint, grant=cids, term_ms=uint),
    st.builds(LeaseRelease, header=headers, resource=text, fencing_token=uint, grant=cids),
    st.builds(
        LeaseRevoke,
        header=headers,
        resource=text,
        fencing_token=uint,
        holder=uint,
        effective_at=times,
        reason=st.none() | text,
    ),
    st.builds(
        LeaseExpiry, header=headers, resource=text, fencing_token=uint, holder=uint, expired_at=times
    ),
)
