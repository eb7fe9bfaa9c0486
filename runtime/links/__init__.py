"""Convergence layers: the link interface a node needs toward one neighbour, the driver
of TCPCL/MTCP sessions over a stream, TCP and TLS listeners and connectors, simulated
loopback links, and the budgets all of a node's sessions share.
"""
