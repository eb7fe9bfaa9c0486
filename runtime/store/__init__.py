"""Where a node holds what it has accepted: the bundle store interface, its SQLite
(durable, group commit) and in-memory implementations, the release artifact store,
and the adapter that gives the sans-IO bundle agent its synchronous store.
"""
