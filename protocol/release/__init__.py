"""Software releases for a fleet that is never all online (protocol version 3).

Content-addressed release artifacts (:mod:`.manifest`, :mod:`.ledger`, :mod:`.fetch`), the
staged rollout policy (:mod:`.rollout`), and control authority with its revocation and the
policy tables (:mod:`.authority`). Sans-IO: events with ``now`` in, actions out.
"""
