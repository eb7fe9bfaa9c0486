"""``fleetwire conformance``: run the protocol's test vectors against an implementation."""

from __future__ import annotations

import argparse
from typing import Any

HELP = """\
Run the language-agnostic test vectors of every protocol version (spec/vectors/) against an
implementation: fleetwire itself by default, or another implementation through an adapter
program that answers JSON lines on standard input and output (the protocol is in
spec/README.md). Each vector passes, is imprecise (a parent error code: still conforming) or
fails; the exit status is 1 if any fails.

The full suite — cases numbered by spec section, the adapter's writer and state machines,
the N-2 matrix, and reports (index.json, junit.xml, index.html) — is the `run` form:

  fleetwire conformance run --impl "node examples/js-adapter/adapter.mjs" --out report/
  fleetwire conformance run --cases '6.4.*'   fleetwire's own adapter, the lease cases only
  fleetwire conformance run --live            with the live cases: nodes on loopback TCPCLv4
  fleetwire conformance run --help            its options

examples:
  fleetwire conformance                       fleetwire against its own vectors
  fleetwire conformance --version 1 -- ./my-adapter --flag
  fleetwire conformance --serve               be the adapter for fleetwire (for other suites)

An adapter that writes a line that is not a JSON answer, does not answer within --timeout
seconds, or exits fails the vector it was asked about (the report names it); the adapter is
then started afresh for the next vector.
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "conformance",
        help="run the protocol test vectors against an implementation",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--serve", action="store_true", help="be the adapter program for fleetwire")
    parser.add_argument("--version", type=int, help="protocol version (default: all)")
    parser.add_argument("--timeout", type=float, help="seconds an adapter has per answer")
    parser.add_argument("adapter", nargs=argparse.REMAINDER, help="-- adapter program and its arguments")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # The suite sits above the runtime (DESIGN.md layout); only this command reaches up to it.
    from fleetwire.conformance.vectors import main

    if args.adapter[:1] == ["run"]:
        from fleetwire.conformance.suite import main as run_suite

        return run_suite(list(args.adapter[1:]))
    argv = ["--serve"] if args.serve else []
    if args.version is not None:
        argv += ["--version", str(args.version)]
    if args.timeout is not None:
        argv += ["--timeout", str(args.timeout)]
    return main(argv + list(args.adapter))
