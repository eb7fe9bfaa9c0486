"""Roles: the coordination machines of ``fleetwire.protocol.coordination`` run on a node."""
