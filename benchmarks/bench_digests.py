"""Digest traffic against a telemetry stream of the same samples: bytes per node per second.

One node samples ``--metrics`` quality-control metrics at ``--rate-hz`` for ``--hours`` of
virtual time (Gaussian noise around each metric's set point, with a drift episode in the middle
that the control chart catches). Two ways of telling the coordinator are sent through the real
pipeline — deterministic CBOR, COSE_Sign1 with Ed25519, one BPv7 bundle each (hop count block,
CRC-32C) — and their bundle bytes counted:

- **digests**: :class:`~fleetwire.protocol.coordination.digests.DigestBuilder`, one periodic
  digest per ``--period-s`` plus the event-driven ones on threshold crossings, each in the form
  it travels in today (``runtime/roles/faults.py``: a signed version-1 exception report carrying
  the draft version-2 digest); the samples stay on the node as detail chunks, fetched only on
  demand (not counted: a pull is the exception);
- **telemetry stream**: every sample reaches the coordinator, batched kindly into one bundle per
  second ``{0: time, 1: [value per metric]}``.

The figures are bits per node per second (the seeds' budget for all steady coordination traffic
is 0.5–2 kbps per node) and the ratio between the two.

A second table puts the digests beside the other families at steady state, each a real signed
message in its own bundle, at rates given as options (defaults: a capability advertisement an
hour; four commitments a day, each offered, accepted and fulfilled; one lease held with a one-hour
term, renewed every half hour, each renewal answered by a grant; an exception report a day; the
node's ledger delta every hour), so that the total is a figure, not a guess about sizes.

A third figure is measured, not computed: ``--cell-members`` real Trio nodes (keys, credentials,
stores, loopback links with light time, ``MockClock``) run the fault roles' digest behaviour
(``FaultMember(digests=...)``) toward a cell coordinator (``CellFaults``) for ``--cell-hours``;
every bundle a member puts on a link is counted, all families together (digests and anything
the roles send besides).

    python benchmarks/bench_digests.py [--hours H] [--rate-hz R] [--metrics M] [--period-s P]
        [--cell-members N] [--cell-hours H]
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from fleetwire.protocol import cbor, cose
from fleetwire.protocol.agent.bundling import message_bundle
from fleetwire.protocol.bpv7 import encode_bundle
from fleetwire.protocol.coordination.digests import Digest, DigestBuilder, EmitDigest, MetricSpec
from fleetwire.protocol.coordination.ledger import Ledger
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.keys import SigningKey
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    LeaseGrant,
    LeaseRenew,
    Message,
    Scope,
    Terms,
    encode_message,
)
from fleetwire.protocol.messages.versions import encode_at
from fleetwire.runtime.roles.fault_messages import digest_message

NODE, COORDINATOR = 17, 1
T0 = 820_000_000_000
BUDGET_BPS = 500


def bundle_bytes(payload: bytes, key: SigningKey, now: int, sequence: int) -> int:
    envelope = cose.sign1(payload, key)
    bundle = message_bundle(
        envelope,
        source=NODE,
        destination=COORDINATOR,
        created_at=now,
        sequence=sequence,
        lifetime_ms=86_400_000,
    )
    return len(encode_bundle(bundle))


def digest_message_bytes(digest: Digest, key: SigningKey, now: int, sequence: int) -> int:
    """A digest's bundle bytes as it travels: the version-2 Digest message (spec/v2/faults.md §1)."""
    message = digest_message(Header(NODE, now, sequence), digest)
    return bundle_bytes(encode_at(message, 2), key, now, sequence)


def run(
    hours: float, rate_hz: float, metrics: int, period_s: int, seed: int = 9
) -> dict[str, float]:
    rng = random.Random(seed)
    key = SigningKey.from_seed(bytes(range(32)))
    centers = [1_000 * (m + 1) for m in range(metrics)]
    sigmas = [10 + 5 * m for m in range(metrics)]
    specs = {
        f"m{m}": MetricSpec(
            edges=tuple(centers[m] + sigmas[m] * k for k in (-3, -2, -1, 0, 1, 2, 3)),
            center=centers[m],
            sigma=sigmas[m],
        )
        for m in range(metrics)
    }
    builder = DigestBuilder(NODE, specs, period_s * 1_000, T0)
    step_ms = round(1_000 / rate_hz)
    duration_ms = round(hours * 3_600_000)
    drift_from, drift_to = duration_ms // 2, duration_ms // 2 + 600_000  # ten minutes of drift
    digest_bytes = stream_bytes = digests = events = samples = 0
    sequence = 0
    batch: list[int] = []
    for t in range(0, duration_ms, step_ms):
        now = T0 + t
        values = []
        for m in range(metrics):
            drift = 4 * sigmas[m] * (t - drift_from) // 600_000 if drift_from <= t < drift_to else 0
            value = round(rng.gauss(centers[m] + drift, sigmas[m]))
            values.append(value)
            samples += 1
            for action in builder.observe(f"m{m}", value, now):
                if isinstance(action, EmitDigest):
                    sequence += 1
                    digest_bytes += digest_message_bytes(action.digest, key, now, sequence)
                    digests += 1
                    events += 1
        for action in builder.tick(now):
            if isinstance(action, EmitDigest):
                sequence += 1
                digest_bytes += digest_message_bytes(action.digest, key, now, sequence)
                digests += 1
        batch.extend(values)
        if (t + step_ms) % 1_000 == 0 or t + step_ms >= duration_ms:
            sequence += 1
            stream_bytes += bundle_bytes(cbor.encode({0: now, 1: batch}), key, now, sequence)
            batch = []
    seconds = duration_ms / 1_000
    return {
        "seconds": seconds,
        "samples": samples,
        "digests": digests,
        "event_digests": events,
        "digest_bps": 8 * digest_bytes / seconds,
        "stream_bps": 8 * stream_bytes / seconds,
    }


DAY_S = 86_400


def message_bytes(message: Message, key: SigningKey) -> int:
    header = message.header
    return bundle_bytes(encode_message(message), key, header.issued_at, header.sequence)


def families(key: SigningKey, per_day: dict[str, float]) -> dict[str, float]:
    """Bits per second per node for each family, from one real message of each kind."""
    cid = ContentId.of(b"an earlier message")
    h = Header(NODE, T0, 1_000, references=(cid,))
    capability = CapabilityAdvertisement(
        Header(NODE, T0, 1_000),
        (
            Capability("refine/carbonaceous", 40_000, "kg", T0, T0 + 30 * DAY_S * 1000),
            Capability("fabricate/structural", 2_000, "kg", T0, T0 + 30 * DAY_S * 1000),
        ),
        (1, 1),
        "B",
        4,
    )
    terms = Terms(NODE, 23, "deliver/refined-carbon", 120_000, "kg", T0 + 12 * DAY_S * 1000, (cid,))
    offer = Commitment(Header(NODE, T0, 1_000), CommitmentState.OFFERED, terms=terms)
    step = Commitment(h, CommitmentState.ACCEPTED, commitment=cid)
    renew = LeaseRenew(h, "feedstock/2026-XY/volume-3", 7, cid, 3_600_000)
    grant = LeaseGrant(h, "feedstock/2026-XY/volume-3", NODE, cid, 7, 3_600_000, T0 + 3_600_000)
    report = ExceptionReport(h, 1, 2, Scope.NODE, NODE, (cid,), cid, "thermal margin low")
    ledger = Ledger(owner=NODE)
    for resource in ("feedstock/carbonaceous", "power/kWh", "refined-carbon/kg", "dock/3"):
        ledger.record(NODE, resource, produced=123_456, consumed=98_765)
    sizes = {
        "capability": message_bytes(capability, key),
        "commitment": message_bytes(offer, key) + 2 * message_bytes(step, key),
        "lease": message_bytes(renew, key) + message_bytes(grant, key),
        "exception": message_bytes(report, key),
        "ledger": bundle_bytes(ledger.to_cbor(), key, T0, 1),
    }
    return {name: 8 * sizes[name] * per_day[name] / DAY_S for name in sizes}


def measure_cell(
    members: int, hours: float, metrics: int, rate_hz: float, period_s: int, seed: int = 9
) -> dict[str, float]:
    """Members on real Trio nodes digest toward their cell coordinator; count link bytes."""
    import trio
    import trio.testing
    from fleetwire.protocol.agent.contacts import Clock, Contact, ContactPlan
    from fleetwire.protocol.trust import Role, TrustStore, issue_credential
    from fleetwire.runtime.links.loopback import LoopbackNetwork
    from fleetwire.runtime.node.node import NodeConfig, open_node
    from fleetwire.runtime.roles.faults import CellFaults, FaultMember
    from fleetwire.runtime.store.memory_store import MemoryBundleStore

    rng = random.Random(seed)
    coordinator, nodes = 10, [10, *range(1000, 1000 + members)]
    root = SigningKey.from_seed(rng.randbytes(32))
    trust = TrustStore([root.public])
    keys = {}
    for serial, node in enumerate(nodes, 1):
        keys[node] = SigningKey.from_seed(rng.randbytes(32))
        roles = [Role.NODE, Role.CELL_COORDINATOR] if node == coordinator else [Role.NODE]
        trust.add_credential(
            issue_credential(
                root, node=node, public_key=keys[node].public, roles=roles,
                not_before=T0 - 86_400_000, not_after=T0 + 30 * 86_400_000, serial=serial,
                cell=0 if node == coordinator else None,
            ),
            T0,
        )  # fmt: skip
    end = T0 + round((hours + 1) * 3_600_000)
    contacts = []
    for m in nodes[1:]:
        contacts += [Contact(m, coordinator, T0, end, 256_000, 1_000)]
        contacts += [Contact(coordinator, m, T0, end, 256_000, 1_000)]
    plan = ContactPlan(contacts)
    specs = {
        f"m{i}": MetricSpec(edges=(970, 980, 990, 1000, 1010, 1020, 1030), center=1000, sigma=10)
        for i in range(metrics)
    }
    sent: dict[int, int] = dict.fromkeys(nodes, 0)

    class Counting:
        def __init__(self, link: Any) -> None:
            self._link = link
            self.local, self.peer = link.local, link.peer

        def __getattr__(self, name: str) -> Any:
            return getattr(self._link, name)

        async def send(self, bundle: bytes) -> None:
            await self._link.send(bundle)
            sent[self.local] += len(bundle)

    async def main() -> None:
        clock = Clock(trio.current_time(), T0)
        network = LoopbackNetwork(plan, clock, random.Random(seed))
        running = {}

        async def run_node(node: int, *, task_status: Any) -> None:
            config = NodeConfig(node=node, key=keys[node], trust=trust, contact_plan=plan,
                                parents={m: coordinator for m in nodes[1:]})  # fmt: skip
            links = {p: Counting(link) for p, link in network.links_of(node).items()}
            async with open_node(config, MemoryBundleStore(), links=links,
                                 inbox=network.open_inbox(node), clock=clock) as n:  # fmt: skip
                running[node] = n
                task_status.started()
                await trio.sleep_forever()

        async def sample(role: FaultMember, node: int) -> None:
            noise = random.Random(node)
            while clock.to_dtn(trio.current_time()) < T0 + round(hours * 3_600_000):
                for i in range(metrics):
                    await role.observe(f"m{i}", round(noise.gauss(1000, 10)))
                await trio.sleep(1 / rate_hz)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(network.run)
            for node in nodes:
                await nursery.start(run_node, node)
            await nursery.start(
                CellFaults(running[coordinator], cell=0, region_coordinator=1,
                           lifetime_ms=86_400_000).run
            )  # fmt: skip
            async with trio.open_nursery() as sampling:
                for node in nodes[1:]:
                    role = FaultMember(running[node], coordinator, "A", lifetime_ms=86_400_000,
                                       digests=specs, digest_period_ms=period_s * 1000)  # fmt: skip
                    await nursery.start(role.run)
                    sampling.start_soon(sample, role, node)
            await trio.sleep(60)  # the last digests reach the links
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    seconds = hours * 3_600
    member_bytes = [sent[m] for m in nodes[1:]]
    return {
        "mean_bps": 8 * sum(member_bytes) / len(member_bytes) / seconds,
        "max_bps": 8 * max(member_bytes) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--rate-hz", type=float, default=1.0)
    parser.add_argument("--metrics", type=int, default=8)
    parser.add_argument("--period-s", type=int, default=60)
    parser.add_argument("--capabilities-per-day", type=float, default=24)
    parser.add_argument("--commitments-per-day", type=float, default=4)
    parser.add_argument("--lease-renewals-per-day", type=float, default=48)
    parser.add_argument("--exceptions-per-day", type=float, default=1)
    parser.add_argument("--ledger-deltas-per-day", type=float, default=24)
    parser.add_argument("--cell-members", type=int, default=4)
    parser.add_argument("--cell-hours", type=float, default=1.0)
    args = parser.parse_args()
    r = run(args.hours, args.rate_hz, args.metrics, args.period_s)
    print(
        f"{args.metrics} metrics at {args.rate_hz:g} Hz for {r['seconds'] / 3600:g} h "
        f"({r['samples']:.0f} samples); digest period {args.period_s} s"
    )
    print(
        f"digests:          {r['digest_bps']:8.1f} bit/s per node "
        f"({r['digests']:.0f} digests, {r['event_digests']:.0f} event-driven)"
    )
    print(f"telemetry stream: {r['stream_bps']:8.1f} bit/s per node (one bundle per second)")
    print(
        f"ratio stream/digests: {r['stream_bps'] / r['digest_bps']:.1f}; budget {BUDGET_BPS} bit/s: "
        f"digests {'under' if r['digest_bps'] < BUDGET_BPS else 'OVER'}, "
        f"stream {'under' if r['stream_bps'] < BUDGET_BPS else 'over'}"
    )
    rates = {
        "capability": args.capabilities_per_day,
        "commitment": args.commitments_per_day,
        "lease": args.lease_renewals_per_day,
        "exception": args.exceptions_per_day,
        "ledger": args.ledger_deltas_per_day,
    }
    others = families(SigningKey.from_seed(bytes(range(32))), rates)
    print("\nall families at steady state, bit/s per node:")
    for name, bps in others.items():
        print(f"  {name:<12} {bps:8.1f}   ({rates[name]:g}/day)")
    rest = sum(others.values())
    for label, telemetry in (("digests", r["digest_bps"]), ("telemetry stream", r["stream_bps"])):
        total = rest + telemetry
        verdict = "under" if total < BUDGET_BPS else "over"
        print(f"  total with {label:<17} {total:8.1f}   ({verdict} {BUDGET_BPS} bit/s)")
    if args.cell_members > 0:
        cell = measure_cell(
            args.cell_members, args.cell_hours, args.metrics, args.rate_hz, args.period_s
        )
        print(
            f"\nmeasured on a loopback cell of real nodes ({args.cell_members} members, "
            f"{args.cell_hours:g} h, every bundle a member put on a link): "
            f"{cell['mean_bps']:.1f} bit/s per member (busiest {cell['max_bps']:.1f}); "
            f"{'under' if cell['max_bps'] < BUDGET_BPS else 'OVER'} {BUDGET_BPS} bit/s"
        )


if __name__ == "__main__":
    main()
