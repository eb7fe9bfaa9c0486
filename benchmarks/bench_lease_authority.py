"""Lease authority decisions per second, and how their cost grows with resources and holders.

    python benchmarks/bench_lease_authority.py [--resources 1000] [--holders 10000]
        [--claims 200000] [--scale 100 1000 10000 100000]

In process, no I/O: verified claims (their content ids computed beforehand, as the runtime
does when it verifies them) go into one :class:`LeaseAuthority`; the figure is decisions per
second of wall time.

- **uncontended**: a holder claims a free resource and is granted it; it releases it later
  (a release is a decision too, and frees the resource). Each claim is a claim→grant decision.
- **contended**: random holders claim random resources (10 holders per resource): most claims
  queue, each release grants the head of the queue, and terms run out and drain under a clock
  that moves 1 ms per decision — expiry notices and drains count as decisions.

Raw limit, measured in the same run: building the grant the decision must produce (a
``Header`` and a ``LeaseGrant``) and one dictionary look-up — what no authority can skip. The
ratio says how many of those one decision costs.

Scaling: µs per decision for 10² … 10⁵ resources with ten holders each; the authority keeps its
expiries in a heap and its queues per resource, so the cost should grow no faster than the log
of the number of live grants.
"""

from __future__ import annotations

import argparse
import collections
import gc
import math
import random
import time

from fleetwire.protocol.coordination.freshness import FreshnessWindow
from fleetwire.protocol.coordination.lease_authority import AuthorityConfig, LeaseAuthority, Send
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import Header, LeaseClaim, LeaseGrant, LeaseRelease

CONFIG = AuthorityConfig(
    max_drift_ms=50,
    max_term_ms=60_000,
    freshness=FreshnessWindow(max_age_ms=10**12, max_skew_ms=10**12),
)


def cid(n: int) -> ContentId:
    return ContentId.of(n.to_bytes(8, "big"))


def raw_limit(n: int) -> float:
    """µs to build the grant a decision must emit, plus one dictionary look-up."""
    table = {f"r{i}": i for i in range(1000)}
    names = [f"r{i % 1000}" for i in range(n)]
    claim = cid(1)
    gc.disable()
    t0 = time.perf_counter()
    for i, name in enumerate(names):
        table.get(name)
        LeaseGrant(Header(1, i, i), name, 7, claim, i, 10_000, i + 10_000)
    elapsed = time.perf_counter() - t0
    gc.enable()
    return elapsed / n * 1e6


def uncontended(resources: int, holders: int, claims: int) -> tuple[float, int]:
    """µs per decision and grants made: every claim finds its resource free."""
    authority = LeaseAuthority(1, CONFIG)
    rng = random.Random(resources)
    inputs = []
    for i in range(claims):
        holder = 10 + rng.randrange(holders)
        inputs.append((LeaseClaim(Header(holder, i, i + 1), f"r{i % resources}", 10_000), cid(i)))
    grants: collections.deque[LeaseGrant] = collections.deque()
    decisions = 0
    gc.disable()
    t0 = time.perf_counter()
    for i, (claim, claim_id) in enumerate(inputs):
        for action in authority.receive(claim, claim_id, i):
            if isinstance(action, Send) and isinstance(action.message, LeaseGrant):
                grants.append(action.message)
        decisions += 1
        # Hold each grant for a while (resources at a time), then release it.
        if len(grants) >= resources // 2:
            g = grants.popleft()
            h = g.holder
            release = LeaseRelease(
                Header(h, i, i + claims + 1), g.resource, g.fencing_token, g.claim
            )
            authority.receive(release, g.claim, i)
            decisions += 1
    elapsed = time.perf_counter() - t0
    gc.enable()
    return elapsed / decisions * 1e6, decisions


def contended(resources: int, holders: int, claims: int) -> tuple[float, int]:
    """µs per decision and grants made: random claims, queues, releases, expiries."""
    authority = LeaseAuthority(1, CONFIG)
    rng = random.Random(resources + 1)
    inputs = []
    for i in range(claims):
        holder = 10 + rng.randrange(holders)
        resource = f"r{rng.randrange(resources)}"
        inputs.append(
            (LeaseClaim(Header(holder, i, i + 1), resource, rng.randint(500, 5_000)), cid(i))
        )
    grants = releases = 0
    held: list[LeaseGrant] = []
    gc.disable()
    t0 = time.perf_counter()
    for i, (claim, claim_id) in enumerate(inputs):
        for action in authority.receive(claim, claim_id, i):
            if isinstance(action, Send) and isinstance(action.message, LeaseGrant):
                grants += 1
                held.append(action.message)
        if held and i % 2:
            releases += 1
            g = held.pop(rng.randrange(len(held)))
            release = LeaseRelease(
                Header(g.holder, i, i + claims + 1), g.resource, g.fencing_token, g.claim
            )
            for action in authority.receive(release, g.claim, i):
                if isinstance(action, Send) and isinstance(action.message, LeaseGrant):
                    grants += 1
                    held.append(action.message)
    elapsed = time.perf_counter() - t0
    gc.enable()
    # Every claim and release handled is a decision, whether it grants, queues or refuses.
    handled = len(inputs) + releases
    return elapsed / handled * 1e6, grants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--holders", type=int, default=10_000)
    parser.add_argument("--claims", type=int, default=200_000)
    parser.add_argument("--scale", type=int, nargs="*", default=[100, 1000, 10_000, 100_000])
    args = parser.parse_args()

    raw = raw_limit(args.claims)
    print(f"raw limit (build the grant + one look-up): {raw:.2f} µs")
    print(f"\n== {args.resources} resources, {args.holders} holders, {args.claims} claims")
    us, decisions = uncontended(args.resources, args.holders, args.claims)
    print(
        f"uncontended claim→grant: {1e6 / us:,.0f} decisions/s ({us:.2f} µs, "
        f"{us / raw:.1f}x raw; {decisions} decisions)"
    )
    us, grants = contended(args.resources, args.holders, args.claims)
    print(
        f"contended (queues, releases, expiries): {1e6 / us:,.0f} decisions/s "
        f"({us:.2f} µs, {us / raw:.1f}x raw; {grants} grants)"
    )

    print("\nscaling (holders = 10 x resources), µs per decision:")
    print(f"{'resources':>10} {'holders':>10} {'uncontended':>12} {'contended':>10}")
    costs = []
    for n in args.scale:
        claims = max(args.claims // 2, 5 * n)
        u, _ = uncontended(n, 10 * n, claims)
        c, _ = contended(n, 10 * n, claims)
        costs.append((n, u, c))
        print(f"{n:>10} {10 * n:>10} {u:>12.2f} {c:>10.2f}")
    if len(costs) > 1:
        (n0, u0, c0), (n1, u1, c1) = costs[0], costs[-1]
        print(
            f"from {n0} to {n1} resources the cost grew x{u1 / u0:.2f} (uncontended) and "
            f"x{c1 / c0:.2f} (contended); log2 of the size grew x{math.log2(n1) / math.log2(n0):.2f}"
        )


if __name__ == "__main__":
    main()
