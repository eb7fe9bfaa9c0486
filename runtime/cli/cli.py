"""The ``fleetwire`` command: one entry point, one subcommand per job.

Each subcommand lives in its own ``cmd_*`` module exposing ``register(subparsers)``; the
module list below is the only place that knows them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fleetwire.protocol.errors import FleetwireError

# Subcommand modules, in the order ``--help`` lists them.
COMMANDS: tuple[str, ...] = (
    "cmd_demo", "cmd_node", "cmd_keys", "cmd_inspect", "cmd_conformance", "cmd_spec"
)

DESCRIPTION = """\
fleetwire — the Fleet Coordination Protocol reference implementation.

Nodes coordinate by exchanging signed intents (capabilities, commitments, exceptions,
resource leases) as Bundle Protocol v7 bundles over store-and-forward links.
Run `fleetwire COMMAND --help` for what each command does and an example.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleetwire",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"fleetwire.runtime.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        try:
            return int(args.run(args) or 0)
        except BaseExceptionGroup as group:
            raise _only_error(group) from None
    except FleetwireError as exc:
        print(f"fleetwire {args.command}: error: {exc}", file=sys.stderr)
        hint = getattr(exc, "hint", "")
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"fleetwire {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _only_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error inside nested nursery groups, so it can be reported plainly."""
    leaves: list[BaseException] = []

    def collect(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                collect(inner)
        else:
            leaves.append(exc)

    collect(group)
    return leaves[0] if len(leaves) == 1 else group


if __name__ == "__main__":
    sys.exit(main())
