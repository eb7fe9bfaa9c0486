"""The Trio driver of the bundle agent: the running node, its ordered sender, its
configuration file, its keys and revocation lists on disk, and the node on real
sockets built from a configuration file.
"""
