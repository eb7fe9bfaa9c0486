"""The late-order rule (spec v3 release §5.3): an authority revocation signed while its key was
valid is accepted after the key expired, never under a revoked key, and no other release object
gets that allowance."""

from __future__ import annotations

import pytest
from fleetwire.protocol.errors import SignatureInvalid
from fleetwire.protocol.release.errors import ReleaseSignerNotAuthorised
from fleetwire.protocol.release.manifest import Version, verify_manifest
from fleetwire.protocol.release.orders import (
    PolicyTable,
    RevocationOrder,
    verify_policy,
    verify_revocation,
)
from fleetwire.protocol.trust import (
    RELEASE_KEY_KEPT_MS,
    KeyExpired,
    KeyNotYetValid,
    KeyRevoked,
    KeyUnknown,
    Role,
    TrustStore,
    issue_credential,
    issue_revocations,
)

from .fleet import DAY, ROOT, T0, node_key, trust_for
from .release_support import make_release

OPERATOR = 901
UNTIL = T0 + 5 * DAY


def trust(roles: tuple[Role, ...] = (Role.NODE, Role.RELEASE)) -> TrustStore:
    store = trust_for([1, 2])
    store.add_credential(
        issue_credential(
            ROOT, node=OPERATOR, public_key=node_key(OPERATOR).public, roles=list(roles),
            not_before=T0, not_after=UNTIL, serial=OPERATOR,
        ),
        T0,
    )  # fmt: skip
    return store


def order(issued_at: int) -> bytes:
    return RevocationOrder(
        serial=1, issued_at=issued_at, issuer=OPERATOR, lineage="B", version=Version(3, 0, 0)
    ).sign(node_key(OPERATOR))


def test_an_order_signed_while_the_key_was_valid_is_accepted_after_it_expired() -> None:
    store = trust()
    late = UNTIL + 25 * DAY  # a cell 30 days into its partition
    with pytest.raises(KeyExpired):
        store.key_for(node_key(OPERATOR).kid, late)  # the key itself is not trusted now
    accepted = verify_revocation(order(T0 + DAY), store, late)
    assert (accepted.issuer, accepted.issued_at) == (OPERATOR, T0 + DAY)


def test_an_order_dated_after_the_key_expired_is_refused_key_expired() -> None:
    with pytest.raises(KeyExpired):
        verify_revocation(order(UNTIL), trust(), UNTIL + DAY)


def test_an_order_dated_after_now_gets_no_allowance() -> None:
    with pytest.raises(KeyExpired):
        verify_revocation(order(UNTIL + 3 * DAY), trust(), UNTIL + DAY)


def test_an_order_dated_before_the_key_was_valid_is_refused() -> None:
    with pytest.raises(KeyNotYetValid):
        verify_revocation(order(T0 - DAY), trust(), UNTIL + DAY)


def test_a_revoked_key_is_refused_whatever_the_order_says_its_time_was() -> None:
    store = trust()
    store.apply_revocations(
        issue_revocations(ROOT, serial=1, issued_at=T0 + 2 * DAY,
                          kids=[node_key(OPERATOR).kid]),
        T0 + 2 * DAY,
    )  # fmt: skip
    with pytest.raises(KeyRevoked):
        verify_revocation(order(T0 + DAY), store, UNTIL + DAY)


def test_a_key_that_never_had_the_release_role_gets_no_allowance() -> None:
    with pytest.raises(ReleaseSignerNotAuthorised):
        verify_revocation(order(T0 + DAY), trust((Role.NODE,)), UNTIL + DAY)


def test_a_changed_issued_at_breaks_the_signature() -> None:
    data = bytearray(order(T0 + DAY))
    at = bytes(data).index((T0 + DAY).to_bytes(8, "big"))
    data[at : at + 8] = (T0 + 2 * DAY).to_bytes(8, "big")
    with pytest.raises(SignatureInvalid):
        verify_revocation(bytes(data), trust(), UNTIL + DAY)


def test_other_release_objects_under_an_expired_key_are_refused() -> None:
    store = trust()
    manifest, _ = make_release(issuer=OPERATOR)
    with pytest.raises(KeyExpired):
        verify_manifest(manifest.sign(node_key(OPERATOR)), store, UNTIL + DAY)
    table = PolicyTable(serial=3, issued_at=T0 + DAY, issuer=OPERATOR)
    with pytest.raises(KeyExpired):
        verify_policy(table.sign(node_key(OPERATOR)), store, UNTIL + DAY)


def test_the_store_keeps_an_expired_release_credential_for_late_orders_then_forgets_it() -> None:
    store = trust()
    # A revocation list applied after the key expired prunes expired credentials, but keeps
    # the release one (plain node credentials go as before).
    store.add_credential(
        issue_credential(ROOT, node=7, public_key=node_key(7).public, roles=[Role.NODE],
                         not_before=T0, not_after=T0 + DAY, serial=7),
        T0,
    )  # fmt: skip
    store.apply_revocations(issue_revocations(ROOT, serial=1, issued_at=UNTIL), UNTIL + DAY)
    with pytest.raises(KeyUnknown):
        store.key_for(node_key(7).kid, T0)
    assert verify_revocation(order(T0 + DAY), store, UNTIL + DAY).serial == 1
    later = UNTIL + RELEASE_KEY_KEPT_MS
    store.apply_revocations(issue_revocations(ROOT, serial=2, issued_at=later), later)
    with pytest.raises(KeyUnknown):
        verify_revocation(order(T0 + DAY), store, later)
