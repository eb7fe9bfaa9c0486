"""Fleet trust: credentials, revocation lists and the trust store (real Ed25519 throughout)."""

from __future__ import annotations

import functools
from typing import Any

import cbor2
import pytest
from fleetwire.protocol import cbor
from fleetwire.protocol.cose import sign1
from fleetwire.protocol.errors import (
    FleetwireError,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureInvalid,
    UntrustedKey,
)
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.trust import (
    CREDENTIAL_AAD,
    REVOCATIONS_AAD,
    Credential,
    CredentialError,
    IssuerUnknown,
    KeyExpired,
    KeyNotYetValid,
    KeyRevoked,
    KeyUnknown,
    RevocationList,
    RevocationsRefused,
    Role,
    TrustStore,
    WrongRole,
    issue_credential,
    issue_revocations,
)
from hypothesis import given
from hypothesis import strategies as st

DAY = 86_400_000  # DTN ms
ROOT = SigningKey.from_seed(b"\x01" * 32)
ROOT2 = SigningKey.from_seed(b"\x02" * 32)
NODE = SigningKey.from_seed(b"\x10" * 32)
NODE2 = SigningKey.from_seed(b"\x11" * 32)
STRANGER = SigningKey.from_seed(b"\x66" * 32)


def _issue(
    key: SigningKey = NODE, issuer: SigningKey = ROOT, serial: int = 1, **fields: Any
) -> bytes:
    args: dict[str, Any] = {
        "node": 7,
        "roles": [Role.NODE],
        "not_before": 10 * DAY,
        "not_after": 40 * DAY,
        "lineage": "refiner-b/3.1",
        "cell": 3,
    }
    args.update(fields)
    return issue_credential(issuer, public_key=key.public, serial=serial, **args)


def _store(*roots: SigningKey) -> TrustStore:
    return TrustStore([root.public for root in roots or (ROOT,)])


def test_credential_grants_trust_inside_its_window() -> None:
    store = _store()
    credential = store.add_credential(_issue(), now=DAY)
    assert credential.kid == NODE.kid and credential.issuer == ROOT.kid
    assert credential.roles == {Role.NODE} and credential.cell == 3 and credential.region is None
    assert credential.lineage == "refiner-b/3.1"
    assert store.key_for(NODE.kid, 10 * DAY) == credential
    assert store.key_for(NODE.kid, 40 * DAY - 1, Role.NODE) == credential
    assert credential.public_key == NODE.public
    with pytest.raises(KeyNotYetValid, match="not valid before"):
        store.key_for(NODE.kid, 10 * DAY - 1)
    with pytest.raises(KeyExpired, match="expired"):
        store.key_for(NODE.kid, 40 * DAY)
    with pytest.raises(WrongRole, match="CELL_COORDINATOR"):
        store.key_for(NODE.kid, 20 * DAY, Role.CELL_COORDINATOR)
    with pytest.raises(KeyUnknown, match=NODE2.kid.hex()):
        store.key_for(NODE2.kid, 20 * DAY)


def test_every_refusal_is_an_untrusted_key() -> None:
    for error in (KeyUnknown, KeyNotYetValid, KeyExpired, KeyRevoked, WrongRole, IssuerUnknown):
        assert issubclass(error, UntrustedKey)


def test_several_roles() -> None:
    store = _store()
    store.add_credential(_issue(roles=[Role.CELL_COORDINATOR, Role.NODE], region=2), now=0)
    assert store.key_for(NODE.kid, 20 * DAY, Role.CELL_COORDINATOR).region == 2
    assert store.key_for(NODE.kid, 20 * DAY, Role.NODE)
    with pytest.raises(WrongRole):
        store.key_for(NODE.kid, 20 * DAY, Role.AUDITOR)


def test_only_roots_issue() -> None:
    store = _store()
    with pytest.raises(IssuerUnknown, match="not a fleet root"):
        store.add_credential(_issue(issuer=STRANGER), now=0)
    # A node key with a valid credential still cannot issue (one level of chain today).
    store.add_credential(_issue(), now=0)
    with pytest.raises(IssuerUnknown):
        store.add_credential(_issue(key=NODE2, issuer=NODE), now=0)
    with pytest.raises(KeyUnknown):
        store.key_for(NODE2.kid, 20 * DAY)


def test_any_of_several_roots() -> None:
    store = _store(ROOT, ROOT2)
    assert store.add_credential(_issue(issuer=ROOT2), now=0).issuer == ROOT2.kid
    assert store.is_root(ROOT.kid) and store.is_root(ROOT2.kid) and not store.is_root(NODE.kid)
    assert set(store.roots) == {ROOT.kid, ROOT2.kid}


def test_store_needs_a_root() -> None:
    with pytest.raises(LocalProtocolError):
        TrustStore([])


def test_expired_credential_refused_on_arrival_future_one_kept() -> None:
    store = _store()
    with pytest.raises(KeyExpired):
        store.add_credential(_issue(), now=40 * DAY)
    store.add_credential(_issue(not_before=100 * DAY, not_after=200 * DAY), now=0)
    with pytest.raises(KeyNotYetValid):
        store.key_for(NODE.kid, DAY)
    assert store.key_for(NODE.kid, 150 * DAY).serial == 1


def test_renewal_overlaps_the_old_credential() -> None:
    store = _store()
    store.add_credential(_issue(serial=1, not_before=0, not_after=100), now=0)
    store.add_credential(_issue(serial=2, not_before=50, not_after=200), now=0)
    store.add_credential(_issue(serial=1, not_before=0, not_after=100), now=0)  # repeat: no-op
    assert store.key_for(NODE.kid, 20).serial == 1
    assert store.key_for(NODE.kid, 60).serial == 2
    assert store.key_for(NODE.kid, 150).serial == 2
    assert [c.serial for c in store.credentials()] == [2, 1]
    store.apply_revocations(
        issue_revocations(ROOT, serial=1, issued_at=0, credential_serials=[2]), 60
    )
    assert store.key_for(NODE.kid, 60).serial == 1
    with pytest.raises(KeyRevoked, match="credential 2 is revoked"):
        store.key_for(NODE.kid, 150)


def test_credentials_kept_per_kid_are_bounded() -> None:
    store = _store()
    for serial in range(1, 10):
        store.add_credential(_issue(serial=serial, not_before=0, not_after=1000 + serial), now=0)
    assert [c.serial for c in store.credentials()] == [9, 8, 7, 6]


def test_revocation_by_kid_by_serial_and_of_a_root() -> None:
    store = _store(ROOT, ROOT2)
    store.add_credential(_issue(), now=0)
    store.add_credential(_issue(key=NODE2, serial=2, issuer=ROOT2), now=0)
    store.apply_revocations(issue_revocations(ROOT, serial=1, issued_at=0, kids=[NODE.kid]), 0)
    with pytest.raises(KeyRevoked, match="key is revoked"):
        store.key_for(NODE.kid, 20 * DAY)
    with pytest.raises(KeyRevoked):
        store.add_credential(_issue(serial=5), now=0)
    assert store.key_for(NODE2.kid, 20 * DAY).serial == 2
    # Root 1 revokes root 2: what root 2 signed is no longer trusted, nor its own lists.
    store.apply_revocations(issue_revocations(ROOT, serial=2, issued_at=1, kids=[ROOT2.kid]), 0)
    assert not store.is_root(ROOT2.kid)
    with pytest.raises(KeyRevoked, match="issuer is revoked"):
        store.key_for(NODE2.kid, 20 * DAY)
    with pytest.raises(IssuerUnknown, match="revoked root"):
        store.apply_revocations(issue_revocations(ROOT2, serial=3, issued_at=2), 0)
    with pytest.raises(IssuerUnknown, match="revoked root"):
        store.add_credential(_issue(key=NODE2, serial=9, issuer=ROOT2), now=0)


def test_revocation_lists_only_move_forward() -> None:
    store = _store()
    store.add_credential(_issue(), now=0)
    first = issue_revocations(ROOT, serial=5, issued_at=0, kids=[NODE.kid])
    applied = store.apply_revocations(first, 0)
    assert applied.serial == 5 and store.revocations == applied
    assert store.apply_revocations(first, 0) == applied  # the same list again: no-op
    with pytest.raises(RevocationsRefused, match="older"):
        store.apply_revocations(issue_revocations(ROOT, serial=4, issued_at=0), 0)
    with pytest.raises(RevocationsRefused, match="two different"):
        store.apply_revocations(issue_revocations(ROOT, serial=5, issued_at=0), 0)
    # A newer list replaces the old one whole: NODE is trusted again.
    store.apply_revocations(issue_revocations(ROOT, serial=6, issued_at=1), 0)
    assert store.key_for(NODE.kid, 20 * DAY).serial == 1


def test_revocations_drop_expired_credentials() -> None:
    store = _store()
    store.add_credential(_issue(), now=0)
    store.apply_revocations(issue_revocations(ROOT, serial=1, issued_at=0), now=41 * DAY)
    assert store.credentials() == []


def test_documents_are_bound_to_their_kind() -> None:
    store = _store()
    credential = _issue()
    revocations = issue_revocations(ROOT, serial=1, issued_at=0)
    with pytest.raises(SignatureInvalid):
        store.apply_revocations(credential, 0)
    with pytest.raises(SignatureInvalid):
        store.add_credential(revocations, 0)
    # A root-signed envelope with the very same payload, but not signed as a credential
    # (say, a protocol message with no external_aad) does not make a credential.
    plain = sign1(_payload_of(credential), ROOT)
    assert Credential.from_payload(_payload_of(plain)).serial == 1
    with pytest.raises(SignatureInvalid):
        store.add_credential(plain, 0)


def _payload_of(envelope: bytes) -> bytes:
    value = cbor2.loads(envelope).value[2]
    assert isinstance(value, bytes)
    return value


def _signed(fields: dict[int, Any], aad: bytes = CREDENTIAL_AAD) -> bytes:
    return sign1(cbor.encode(fields), ROOT, external_aad=aad)


def _fields(**changes: Any) -> dict[int, Any]:
    fields: dict[int, Any] = cbor2.loads(_payload_of(_issue()))
    for label, value in changes.items():
        number = int(label[1:])
        if value is None:
            fields.pop(number)
        else:
            fields[number] = value
    return fields


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"f10": STRANGER.kid}, "issuer field is not the key that signed it"),
        ({"f10": b"short"}, "34-byte kid"),
        ({"f11": 0}, "field 11 is not known"),
        ({"f9": None}, "lacks field 9"),
        ({"f1": -1}, "node"),
        ({"f1": 1 << 64}, "tag 2"),
        ({"f2": b"\x00" * 31}, "32 bytes"),
        ({"f3": []}, "no role"),
        ({"f3": [9]}, "roles"),
        ({"f3": [2, 1]}, "ascending"),
        ({"f3": [1, 1]}, "ascending"),
        ({"f3": [2], "f4": None}, "must name its cell"),
        ({"f3": [3]}, "must name its region"),
        ({"f3": 1}, "array"),
        ({"f7": 10 * DAY}, "later than not_before"),
        ({"f8": b"bytes"}, "lineage"),
        ({"f8": "x" * 300}, "300 bytes"),
        ({"f4": "three"}, "cell"),
    ],
)
def test_bad_credential_payloads_refused(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(CredentialError, match=match):
        _store().add_credential(_signed(_fields(**changes)), now=0)


def test_non_deterministic_payload_refused() -> None:
    fields = _fields()
    reordered = cbor2.dumps(dict(sorted(fields.items(), reverse=True)))
    with pytest.raises(CredentialError, match="payload"):
        _store().add_credential(sign1(reordered, ROOT, external_aad=CREDENTIAL_AAD), now=0)


def test_bad_revocation_payloads_refused() -> None:
    base = cbor2.loads(_payload_of(issue_revocations(ROOT, serial=1, issued_at=0)))
    for change, match in [
        ({3: [b"short"]}, "34"),
        ({3: sorted([NODE.kid, NODE2.kid], reverse=True)}, "ascending"),
        ({4: [3, 3]}, "ascending"),
        ({4: [-1]}, "uint64"),
        ({6: 0}, "not known"),
        ({1: "one"}, "serial"),
    ]:
        with pytest.raises(CredentialError, match=match):
            _store().apply_revocations(_signed({**base, **change}, REVOCATIONS_AAD), 0)


def test_issuing_refuses_what_readers_would_refuse() -> None:
    for fields in (
        {"not_after": 10 * DAY},
        {"roles": [Role.CELL_COORDINATOR], "cell": None},
        {"roles": [Role.REGION_COORDINATOR]},
        {"roles": []},
        {"node": -1},
        {"cell": True},
        {"lineage": "é" * 200},
    ):
        with pytest.raises(LocalProtocolError):
            _issue(**fields)
    with pytest.raises(LocalProtocolError):
        issue_revocations(ROOT, serial=-1, issued_at=0)
    with pytest.raises(LocalProtocolError):
        issue_revocations(ROOT, serial=1, issued_at=0, kids=[b"short"])


def test_payload_layout_is_small_uint_keys_in_order() -> None:
    payload = _payload_of(_issue(roles=[Role.AUDITOR, Role.NODE], region=4))
    decoded = cbor2.loads(payload)
    assert list(decoded) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert decoded[3] == [1, 4]
    assert cbor.encode(decoded) == payload


@given(
    node=st.integers(0, (1 << 64) - 1),
    roles=st.sets(st.sampled_from(list(Role)), min_size=1),
    window=st.tuples(st.integers(0, 1 << 62), st.integers(1, 1 << 62)),
    serial=st.integers(0, (1 << 64) - 1),
    lineage=st.text(max_size=60),
    cell=st.none() | st.integers(0, 1000),
    region=st.none() | st.integers(0, 1000),
)
def test_credential_payload_roundtrip(
    node: int,
    roles: set[Role],
    window: tuple[int, int],
    serial: int,
    lineage: str,
    cell: int | None,
    region: int | None,
) -> None:
    if Role.CELL_COORDINATOR in roles and cell is None:
        cell = 1
    if Role.REGION_COORDINATOR in roles and region is None:
        region = 1
    credential = Credential(
        node=node,
        public_key=NODE.public,
        roles=frozenset(roles),
        not_before=window[0],
        not_after=window[0] + window[1],
        serial=serial,
        issuer=ROOT.kid,
        lineage=lineage,
        cell=cell,
        region=region,
    )
    assert Credential.from_payload(credential.to_payload()) == credential


@given(st.sets(st.binary(min_size=34, max_size=34), max_size=5), st.sets(st.integers(0, 99)))
def test_revocation_payload_roundtrip(kids: set[bytes], serials: set[int]) -> None:
    revocations = RevocationList(
        serial=3, issued_at=9, issuer=ROOT.kid, kids=frozenset(kids),
        credential_serials=frozenset(serials),
    )  # fmt: skip
    assert RevocationList.from_payload(revocations.to_payload()) == revocations


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_remote_errors(data: bytes) -> None:
    store = _store()
    for action in (store.add_credential, store.apply_revocations):
        try:
            action(data, 0)
        except RemoteProtocolError:
            pass


@given(st.data())
def test_mutated_credentials_raise_only_remote_errors(data: st.DataObject) -> None:
    good = bytearray(_issue())
    index = data.draw(st.integers(0, len(good) - 1))
    good[index] ^= data.draw(st.integers(1, 255))
    try:
        _store().add_credential(bytes(good), now=0)
    except FleetwireError as exc:
        assert isinstance(exc, RemoteProtocolError)
    else:  # pragma: no cover - a changed byte that still verifies would be a forgery
        pytest.fail("a mutated credential was accepted")


# --- the store's promise over any history ----------------------------------------------

POOL = [NODE, NODE2, SigningKey.from_seed(b"\x12" * 32)]
SIGNERS = [ROOT, ROOT2, STRANGER]


# A few revocation lists' contents (indexes into POOL + [ROOT2]; credential serials), so
# that each signed envelope is made once and cached.
REVOKED_KEYS = [frozenset(), frozenset({0}), frozenset({1, 2}), frozenset({3})]
REVOKED_SERIALS = [frozenset(), frozenset({1}), frozenset({2, 3}), frozenset({4})]


@functools.cache
def _history_credential(key: int, serial: int, issuer: int) -> bytes:
    """Same (key, serial) always means the same content, as a root would ensure."""
    return _issue(
        POOL[key], SIGNERS[issuer], serial, not_before=serial * 10, not_after=serial * 10 + 25,
        roles=[Role(1 + serial % 4), Role.NODE], region=1,
    )  # fmt: skip


@functools.cache
def _history_revocations(
    issuer: int, serial: int, revoked: frozenset[int], serials: frozenset[int]
) -> bytes:
    kids = [(*POOL, ROOT2)[index].kid for index in revoked]
    return issue_revocations(
        (ROOT, ROOT2)[issuer], serial=serial, issued_at=0, kids=kids, credential_serials=serials
    )


def _trusted(c: Credential, now: int, role: Role | None, rl: RevocationList | None) -> bool:
    """What key_for promises of a credential it returns, from the definitions alone."""
    kids = rl.kids if rl else frozenset()
    return (
        c.not_before <= now < c.not_after
        and (role is None or role in c.roles)
        and c.kid not in kids
        and c.issuer not in kids
        and not (rl and c.serial in rl.credential_serials)
    )


_OPS = st.lists(
    st.tuples(st.integers(0, 8), st.just("issue"), st.integers(0, 2), st.integers(1, 4),
              st.integers(0, 2))
    | st.tuples(st.integers(0, 8), st.just("revoke"), st.integers(0, 1), st.integers(1, 6),
                st.integers(0, 3), st.integers(0, 3))
    | st.tuples(st.integers(0, 8), st.just("query"), st.integers(0, 2),
                st.none() | st.sampled_from(list(Role))),
    max_size=20,
)  # fmt: skip


@given(_OPS)
def test_key_for_is_sound_and_complete_over_any_history(ops: list[tuple[Any, ...]]) -> None:
    """Whatever arrives, in whatever order: key_for returns only a credential that is
    trusted by definition (window, role, revocations), and refuses only when none is."""
    store = _store(ROOT, ROOT2)
    accepted: dict[tuple[bytes, int], Credential] = {}
    now = 0
    for step, action, *args in ops:
        now += step  # time only moves forward
        if action == "issue":
            key, serial, issuer = args
            try:
                credential = store.add_credential(_history_credential(key, serial, issuer), now)
            except UntrustedKey:
                continue
            assert SIGNERS[issuer] is not STRANGER
            accepted.setdefault((POOL[key].kid, serial), credential)
        elif action == "revoke":
            issuer, serial, kids, serials = args
            envelope = _history_revocations(
                issuer, serial, REVOKED_KEYS[kids], REVOKED_SERIALS[serials]
            )
            try:
                store.apply_revocations(envelope, now)
            except (RevocationsRefused, IssuerUnknown):
                pass
        else:
            kid, role = POOL[args[0]].kid, args[1]
            revocations = store.revocations
            try:
                found = store.key_for(kid, now, role)
            except UntrustedKey:
                assert not any(
                    _trusted(c, now, role, revocations)
                    for (k, _), c in accepted.items()
                    if k == kid
                )
            else:
                assert _trusted(found, now, role, revocations)
                assert accepted[(kid, found.serial)] == found


def test_credentials_of_answers_what_a_scan_would_for_one_kid() -> None:
    """``credentials_of`` (one lookup) equals a scan of ``credentials()`` for that kid, newest
    first; ``roles.reader_cell`` reads the newest credential's cell through it."""
    from fleetwire.protocol.roles import reader_cell

    store = _store()
    store.add_credential(_issue(serial=1, not_before=0, not_after=100, cell=3), now=0)
    store.add_credential(_issue(serial=2, not_before=50, not_after=200, cell=4), now=0)
    store.add_credential(_issue(key=NODE2, node=8, serial=3, not_before=0, not_after=200), now=0)
    for kid in (NODE.kid, NODE2.kid, STRANGER.kid):
        assert store.credentials_of(kid) == [c for c in store.credentials() if c.kid == kid]
    assert [c.serial for c in store.credentials_of(NODE.kid)] == [2, 1]
    assert reader_cell(store, NODE.kid) == 4
    assert reader_cell(store, STRANGER.kid) is None
