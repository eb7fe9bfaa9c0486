"""Only the optional C accelerator lives here; everything else is in pyproject.toml.

``optional=True``: without a C compiler the build warns and the package stays pure Python
(fleetwire.protocol.messages.accel.AVAILABLE is then false).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fleetwire.protocol._speedups",
            ["protocol/_speedups.c", "protocol/_content_id.c", "protocol/_event_queue.c",
             "protocol/_arenas.c", "protocol/_agent_store.c"],
            # Included by those files: listed so that a change rebuilds and an sdist has them.
            depends=["protocol/_sha256.h", "protocol/_walk_facts.h"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
