"""The optional C walk of a bundle's common shape (``walk_bundle`` in ``protocol/_speedups.c``),
and the C writer of a message bundle (``message_bundle_bytes``, its send path).

Theory of operation
-------------------
Every node decodes every bundle it receives, on every hop; nearly all of them have the same
shape (ipn EIDs, one-byte block fields, CRC-32C everywhere — what
:func:`~.blocks.read_primary_block_common` and :func:`~.blocks.read_canonical_block_common`
take). :func:`walk` reads exactly that shape in C, CRCs included, and builds the same objects
the Python readers build; for anything else it returns ``None`` and
:func:`~.bundle.decode_bundle_offsets` runs the Python readers, which decide — errors
included. So C never chooses an error, only "certainly the common shape" (the rule of the
codec's accelerator, :mod:`fleetwire.protocol.messages.accel`). The bundle-wide rules of RFC
9171 §4 (:func:`~.bundle.check_bundle`) are checked in C for that shape; a bundle that might
break one goes to the Python road too, which names the rule.

The C code stores values straight into the slots of the frozen attrs classes, as
:meth:`.eid.IpnEid._trusted` does in Python; the spec below hands it the slot offsets, and is
built only if each class's slots are exactly its fields. The ipn EIDs it built last are kept
by their CBOR (a bounded cache) and handed out again for the same bytes: an IpnEid is
frozen, so it is the same value. Its CRC-32C checks use the SSE 4.2 instruction where the CPU
has it, the table otherwise (``crc32c_roads`` gives both, for the tests). Without a compiler (or under
:func:`without_walk`) :data:`walk` is ``None``: the pure-Python road, the reference.

The other direction: every message a node sends becomes one bundle of a fixed shape (primary
block, Hop Count block, payload block, CRC-32C on each; see
:func:`fleetwire.protocol.agent.bundling.new_message`). :data:`message_bytes` writes that
bundle whole in C, byte for byte what :func:`~.bundle.encode_bundle` writes for it, with the
block offsets. It takes EIDs as their CBOR (``Eid.wire``) and checks every other input's
range and the RFC 9171 §4 rules that shape could break, raising TypeError or ValueError; the
caller then runs the Python encoder, which names the rule. Without a compiler (or under
:func:`without_message_bytes`) it is ``None``.

A relay's side: every bundle it takes it transmits again with the hop counted and itself as
the previous node (RFC 9171 §4.4.1, §4.4.3, §5.4). :data:`relay_forward` writes those bytes
in one pass for the two shapes nearly every relayed bundle has (Hop Count then payload, or
Hop Count, Previous Node, payload), copying the other blocks as received; for anything else
— a hop count at its limit included — it returns ``None`` and
:func:`fleetwire.protocol.agent.bundling.forward_bytes`'s Python road, the reference, decides.
Without a compiler (or under :func:`without_relay_forward`) it is ``None``.

And the facts each hop needs: :data:`walk_facts` walks as :data:`walk` does and also reads,
in the same pass, what the agent's ``accept_record`` and its hop checks read back from the
bundle in Python (the bundle key with the payload's SHA-256, the EIDs' text, the expiry, the
hop count's verdict, the previous node): see ``protocol/_walk_facts.h`` and
:func:`fleetwire.protocol.agent.bundling.accept_received`. It is the walk, so
:func:`without_walk` switches it off too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs

from .blocks import CanonicalBlock, CreationTimestamp, PrimaryBlock
from .crc import CrcType
from .eid import DTN_NONE, IpnEid

try:
    from .. import _speedups  # type: ignore[attr-defined]
except ImportError:  # no compiler at install time: the Python readers alone
    _speedups = None

__all__ = [
    "message_bytes",
    "relay_forward",
    "spec_for",
    "walk",
    "walk_facts",
    "without_message_bytes",
    "without_relay_forward",
    "without_walk",
]


def _offsets(cls: type[Any], names: tuple[str, ...]) -> tuple[int, ...] | None:
    """Slot offsets of ``names`` if they are all of ``cls``'s slots (so a filled object is
    whole), else None."""
    slots = {name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())}
    if slots - {"__weakref__"} != set(names):
        return None
    try:
        return tuple(_speedups.slot_offset(cls.__dict__[name]) for name in names)
    except (KeyError, TypeError):
        return None


def spec_for(bundle_class: type[Any], max_blocks: int, max_data: int) -> tuple[Any, ...] | None:
    """The C walk's spec (see ``walk_bundle`` in ``_speedups.c``), or None if it cannot be."""
    if _speedups is None:
        return None
    parts = (
        (bundle_class, ("primary", "blocks")),
        (PrimaryBlock, tuple(a.name for a in attrs.fields(PrimaryBlock))),
        (CanonicalBlock, tuple(a.name for a in attrs.fields(CanonicalBlock))),
        (CreationTimestamp, ("time", "sequence")),
        (IpnEid, ("node", "service", "allocator", "elements", "wire")),
    )
    spec: list[Any] = []
    for cls, names in parts:
        offsets = _offsets(cls, names)
        if offsets is None:
            return None
        spec += (cls, offsets)
    return (*spec, DTN_NONE, CrcType.CRC32C, max_blocks, max_data)


#: ``walk(spec, data)`` → ``(bundle, offsets)`` or None; None itself without the accelerator
#: (or with one built before the walk existed: an install not rebuilt since).
walk: Callable[[tuple[Any, ...], bytes], Any] | None = getattr(_speedups, "walk_bundle", None)
AVAILABLE: Final = walk is not None


@contextlib.contextmanager
def _without(*names: str) -> Iterator[None]:
    """The accelerator's ``names`` switched off (None) while the block runs: the callers read
    them from this module at each call, so they take the Python road meanwhile."""
    found = globals()
    saved = {name: found[name] for name in names}
    found.update(dict.fromkeys(names))
    try:
        yield
    finally:
        found.update(saved)


def without_walk() -> contextlib.AbstractContextManager[None]:
    """The pure-Python readers while the block runs (tests of that road): the walk and the
    walk with the hop's facts (:data:`walk_facts`) both off."""
    return _without("walk", "walk_facts")


#: ``walk_facts(spec, data, payload_tag, this_node)`` → ``(bundle, offsets, bundle_key,
#: content_key, source_text, destination_text, local, expires_at, hop_over, exclude)`` or None
#: (the Python road decides); None itself without the accelerator (or an older build).
walk_facts: Callable[[tuple[Any, ...], bytes, int, int], Any] | None = getattr(
    _speedups, "walk_bundle_facts", None
)


def without_walk_facts() -> contextlib.AbstractContextManager[None]:
    """The walk without the hop's facts while the block runs: the agent takes the bundle
    through ``decode_bundle_offsets`` and ``accept_record`` (tests of that road)."""
    return _without("walk_facts")


#: ``message_bytes(flags, destination_wire, source_wire, report_to_wire, time, sequence,
#: lifetime, hop_limit, payload)`` → ``(bytes, (start, hops, payload, end))``; None without
#: the accelerator (or with one built before the send path existed).
message_bytes: Callable[..., tuple[bytes, tuple[int, ...]]] | None = getattr(
    _speedups, "message_bundle_bytes", None
)


def without_message_bytes() -> contextlib.AbstractContextManager[None]:
    """The pure-Python bundle encoder for new messages while the block runs (tests of that road)."""
    return _without("message_bytes")


#: ``relay_forward(data, offsets, this_node)`` → the bytes to transmit, or None (the Python
#: road decides); None itself without the accelerator (or with one built before it existed).
relay_forward: Callable[[bytes, tuple[int, ...], int], bytes | None] | None = getattr(
    _speedups, "relay_forward_bytes", None
)


def without_relay_forward() -> contextlib.AbstractContextManager[None]:
    """The pure-Python forwarding bytes while the block runs (tests of that road)."""
    return _without("relay_forward")
