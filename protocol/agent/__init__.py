"""The sans-IO bundle agent: accept, route, forward, deliver, expire, report (:mod:`.agent`)."""
