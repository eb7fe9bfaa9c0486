"""Which role a message's signer needs (spec §8, "Roles authorise messages").

Theory of operation
-------------------
A signature proves *who* wrote a message; the signer's credential says *what they may say*.
:func:`check_role` is the one table of that rule, applied at delivery after the signature
verified and before anything acts on the message:

==============================================  =============================================
message                                         the signer's credential must grant
==============================================  =============================================
lease grant, lease revoke, lease expiry notice  cell coordinator (2), of the reader's cell
                                                when the reader has one; for an authority
                                                lease (``authority/…``), region coordinator (3)
exception report with scope region              region coordinator (3) of region ``scope_id``
every other message                             node (1) or any coordinator role
==============================================  =============================================

An auditor-only credential (role 4) may read but not write; a release-only one (role 5)
signs release objects (:mod:`.release`) and no message. A refusal is a
:class:`~.trust.WrongRole` (``key-wrong-role``). Pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Final

from .messages import ExceptionReport, LeaseExpiry, LeaseGrant, LeaseRevoke, Message, Scope
from .trust import Credential, Role, TrustStore, WrongRole

__all__ = ["AUTHORITY_MESSAGES", "REGION_RESOURCES", "check_role", "reader_cell"]

#: Resources whose authority is the region: the authority leases that make a node its cell's
#: lease authority (spec §6.4 "Authority hand-over").
REGION_RESOURCES: Final = ("authority/",)
#: Messages only a resource's authority (a cell coordinator) may sign (spec §6.4, §8).
AUTHORITY_MESSAGES: Final = (LeaseGrant, LeaseRevoke, LeaseExpiry)
_WRITERS: Final = frozenset({Role.NODE, Role.CELL_COORDINATOR, Role.REGION_COORDINATOR})


def check_role(message: Message, signer: Credential, reader_cell: int | None = None) -> None:
    """Raise :class:`WrongRole` unless ``signer`` may have written ``message`` (table above).

    ``reader_cell`` is the cell of the node reading it (from its own credential), if any: a
    lease authority speaks for its own cell's resources only.
    """
    # The words of a refusal are built only for a refusal: this runs on every delivery.
    if isinstance(message, AUTHORITY_MESSAGES):
        if Role.REGION_COORDINATOR in signer.roles and message.resource.startswith(
            REGION_RESOURCES
        ):
            return  # a region is the authority of its cells' authority leases (spec §6.4)
        if Role.CELL_COORDINATOR not in signer.roles:
            raise WrongRole(
                f"{_name(message)} must be signed by a cell coordinator; the {_who(signer)} "
                "is not one"
            )
        if reader_cell is not None and signer.cell != reader_cell:
            raise WrongRole(
                f"{_name(message)} for cell {reader_cell} signed by the coordinator of cell "
                f"{signer.cell}"
            )
        return
    if isinstance(message, ExceptionReport) and message.scope is Scope.REGION:
        if Role.REGION_COORDINATOR not in signer.roles or signer.region != message.scope_id:
            raise WrongRole(
                f"a region-scope exception report for region {message.scope_id} must be signed "
                f"by that region's coordinator; the {_who(signer)} is not"
            )
        return
    if signer.roles.isdisjoint(_WRITERS):  # no intersection set built
        raise WrongRole(
            f"{_name(message)} needs a node or coordinator role; the {_who(signer)} has neither"
        )


def _who(signer: Credential) -> str:
    return f"key of node {signer.node} (serial {signer.serial})"


def _name(message: Message) -> str:
    return type(message).__name__


def reader_cell(trust: TrustStore, kid: bytes) -> int | None:
    """The cell of the node whose key is ``kid``, from its own credential: the ``reader_cell``
    :func:`check_role` takes (a lease authority speaks for its own cell only, spec §8)."""
    kept = trust.credentials_of(kid)  # newest first
    return kept[0].cell if kept else None
