"""TrustStore.key_for keeps its role-free answers: they must be the answers it would give."""

from __future__ import annotations

import functools
from typing import Any

from fleetwire.protocol.errors import FleetwireError
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.trust import Role, TrustStore, issue_credential, issue_revocations
from hypothesis import example, given, settings
from hypothesis import strategies as st

ROOT = SigningKey.from_seed(b"\x01" * 32)
ROOT2 = SigningKey.from_seed(b"\x02" * 32)
KEYS = [SigningKey.from_seed(bytes([0x10 + i]) * 32) for i in range(2)]

_ADD = st.tuples(
    st.just("add"), st.integers(0, 1), st.integers(1, 6), st.integers(0, 60), st.integers(1, 60),
    st.sampled_from([ROOT, ROOT2]), st.integers(0, 10),
)  # fmt: skip
_REVOKE = st.tuples(
    st.just("revoke"), st.integers(0, 1), st.integers(0, 6), st.booleans(), st.booleans(),
    st.booleans(), st.integers(0, 50),
)  # fmt: skip
_ASK = st.tuples(
    st.just("ask"), st.sampled_from([0, 0, 1, 2]), st.integers(0, 70),
    st.sampled_from([None, None, Role.NODE, Role.CELL_COORDINATOR]),
)  # fmt: skip


def _outcome(store: TrustStore, call: Any) -> object:
    try:
        return call(store)
    except FleetwireError as exc:
        return (type(exc), exc.message)


@settings(max_examples=300, deadline=None)
# The three ways a kept answer could go stale, each once for certain: a revocation, a newer
# credential, and an older credential that answered only while the newer was not yet valid.
@example(
    [("add", 0, 1, 0, 60, ROOT, 0)],
    [("ask", 0, 5, None), ("revoke", 0, 0, True, False, False, 0), ("ask", 0, 5, None)],
)
@example(
    [("add", 0, 1, 0, 60, ROOT, 0)],
    [("ask", 0, 5, None), ("add", 0, 2, 0, 60, ROOT, 0), ("ask", 0, 5, None)],
)
@example(
    [("add", 0, 1, 0, 60, ROOT, 0), ("add", 0, 2, 30, 30, ROOT, 0)],
    [("ask", 0, 5, None), ("ask", 0, 40, None)],
)
@given(
    st.lists(_ADD, min_size=1, max_size=4),
    st.lists(st.one_of(_ASK, _ASK, _ASK, _REVOKE, _ADD), max_size=40),
)
def test_kept_answers_are_the_answers_of_a_store_that_keeps_none(
    first: list[Any], then: list[Any]
) -> None:
    ops = first + then
    kept, plain = (TrustStore([ROOT.public, ROOT2.public]) for _ in range(2))
    serial = 0
    for op in ops:
        if op[0] == "add":
            _, which, number, start, length, issuer, now = op
            data = issue_credential(
                issuer, node=7 + which, public_key=KEYS[which].public, serial=number,
                roles=[Role.NODE] if number % 2 else [Role.NODE, Role.CELL_COORDINATOR],
                not_before=start, not_after=start + length, cell=3,
            )  # fmt: skip
            call: Any = functools.partial(TrustStore.add_credential, data=data, now=now)
        elif op[0] == "revoke":
            _, which, number, by_kid, by_serial, root2, now = op
            serial += 1
            data = issue_revocations(
                ROOT, serial=serial, issued_at=serial,
                kids=([KEYS[which].kid] if by_kid else []) + ([ROOT2.kid] if root2 else []),
                credential_serials=[number] if by_serial else [],
            )  # fmt: skip
            call = functools.partial(TrustStore.apply_revocations, data=data, now=now)
        else:
            _, which, now, role = op
            kid = KEYS[which].kid if which < 2 else b"\x12\x20" + b"\x00" * 32
            call = functools.partial(TrustStore.key_for, kid=kid, now=now, role=role)
        plain._answers.clear()  # the reference never answers from what it kept
        assert _outcome(kept, call) == _outcome(plain, call)
