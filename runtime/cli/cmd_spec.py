"""``fleetwire spec``: guard the protocol spec against breaking changes (``spec check``), and
record a version as released (``spec freeze``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = """\
Guard the protocol spec (spec/: CDDL, vectors, code tree) against breaking changes, the way
`buf breaking` guards protobuf files.

  check    compare every version's CDDL and vectors with the versions inside its window
           (N-2), and every released version with its frozen record; exit 1 on any break,
           each named by its file and rule (spec/v2/versions.md §5)
  freeze   record a version as released (spec/v<N>/frozen.json): from then on its CDDL,
           code tree and vectors may only grow by vectors

examples:
  fleetwire spec check                     the spec shipped with fleetwire
  fleetwire spec check --spec ./spec       a checkout's spec, after editing it
  fleetwire spec freeze 2 --spec ./spec    release version 2
"""

RULES_HELP = """\
rules (spec/v2/versions.md §5):
{rules}
"""


def register(subparsers: Any) -> None:
    from fleetwire.conformance.breaking import RULES

    rules = "\n".join(f"  {name:24} {text}" for name, text in RULES.items())
    parser = subparsers.add_parser(
        "spec",
        help="check the protocol spec for breaking changes between versions",
        description=HELP,
        epilog=RULES_HELP.format(rules=rules),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="fail on a breaking change (removed or renumbered key, changed type, ...)",
        description=HELP,
        epilog=RULES_HELP.format(rules=rules),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--spec", type=Path, help="the spec/ folder (default: fleetwire's own)")
    check.set_defaults(run=run_check)
    freeze = actions.add_parser(
        "freeze",
        help="record a version as released (spec/v<N>/frozen.json)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    freeze.add_argument("version", type=int, help="the version to release")
    freeze.add_argument("--spec", type=Path, help="the spec/ folder (default: fleetwire's own)")
    freeze.set_defaults(run=run_freeze)

    def without_action(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(run=without_action)


def _spec_dir(given: Path | None) -> Path | None:
    """The folder to check, or None after saying why it will not do."""
    from fleetwire.conformance.vectors import default_spec_dir

    spec = given if given is not None else default_spec_dir()
    if not (spec / "v1").is_dir():
        print(
            f"fleetwire spec: error: {spec} has no v1/ folder "
            "(hint: --spec names the spec/ folder of a checkout)",
            file=sys.stderr,
        )
        return None
    return spec


def run_check(args: argparse.Namespace) -> int:
    from fleetwire.conformance.breaking import check

    spec = _spec_dir(args.spec)
    if spec is None:
        return 2
    try:
        report = check(spec)
    except (ValueError, KeyError) as exc:  # a frozen record or vector file we cannot read
        print(f"fleetwire spec check: error: {exc} (hint: is {spec} a spec/ folder?)", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


def run_freeze(args: argparse.Namespace) -> int:
    from fleetwire.conformance.breaking import check, freeze, versions_in

    spec = _spec_dir(args.spec)
    if spec is None:
        return 2
    if args.version not in versions_in(spec):
        print(
            f"fleetwire spec freeze: error: no version {args.version} in {spec} "
            f"(hint: versions there: {', '.join(map(str, versions_in(spec))) or 'none'})",
            file=sys.stderr,
        )
        return 2
    report = check(spec)
    if not report.ok:
        print(report.summary())
        print("fleetwire spec freeze: error: the spec has breaking changes; fix them first",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"released version {args.version}: {freeze(spec, args.version)}")
    return 0
