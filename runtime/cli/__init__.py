"""The ``fleetwire`` command (``cli``) and its subcommands (``cmd_*``).
"""
