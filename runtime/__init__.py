"""fleetwire's drivers and I/O around the sans-IO protocol (DESIGN.md, Layout).

- ``store``: bundle, artifact and agent stores (SQLite, memory).
- ``links``: convergence layers (TCPCL over TCP, TLS, loopback).
- ``node``: the Trio driver of the bundle agent, its configuration and keys.
- ``roles``: coordination roles wired into a running node.
- ``sim``: the discrete-event fleet simulator.
- ``demo``: ``fleetwire demo`` and its report.
- ``cli``: the ``fleetwire`` command.
"""
