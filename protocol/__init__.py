"""fleetwire.protocol — the sans-IO core of the Fleet Coordination Protocol.

Pure code: no I/O, no threads, no clock reads, no globals. Time (``now``) and randomness are
passed in by the caller; every decoder is bounded against hostile input and raises only
:class:`fleetwire.protocol.errors.FleetwireError` subclasses.
"""
