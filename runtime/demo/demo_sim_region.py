"""One region of the simulator engine's demo fleet, played to the end of the run.

Theory of operation
-------------------
:func:`play` builds one region of the fleet (:func:`.demo_sim_fleet.build`) and runs what
each of its nodes does — the loopback engine's script (:mod:`.demo_behaviour`) as simulator
callbacks, with the same per-member random streams:

- every member advertises its capabilities once, then every 2–6 hours (4–12 without
  contention) claims a dock of its cell (half the time), offers a commitment to a neighbour
  (three times in ten; the neighbour accepts, and the promisor reports it fulfilled 1–4 days
  later) or reports an exception (the rest; its cell coordinator escalates severity 3 and
  above to the region). A claimed dock is polled every 10 minutes until usable (given up
  after 12 hours), used in 15-minute operations under the fencing token for 2–6 hours, and
  released.
- every member samples its telemetry and sends a digest (:mod:`.demo_digests`) every 3 hours
  and at once on a threshold crossing, as the version-2 digest message once its coordinator
  has advertised that it reads version 2 (coordinators advertise the versions they read to
  their parent and the nodes below them as the run starts).

Every grant an authority sends and every use a member makes goes into the lease invariant
checker's trace; once an hour a sampler records the region's :class:`~.demo_results.Interval`
(bytes each node put on its links, messages under way, leases held, exceptions open, cells
whose coordinator may grant, bundles held at cell 0's coordinator) and hands it on. What the
region did comes back as a :class:`RegionOutcome`; :mod:`.demo_sim` merges the regions.

What the simulator does not do again: a coordinator does not convert each delivered digest
message back into the coordination core's digest to see whether it shows samples out of
control (the loopback engine's and the digest tests' business; with the former carrier that
was about a seventh of a region's CPU); it counts a delivered digest as anomalous when the
digest its member built was.

"Bundles in flight" counts messages sent and not yet delivered to their destination (end to
end), not bundles held in stores hop by hop as the loopback engine does; the cut cell's
coordinator is counted from its store, as there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import attrs
from fleetwire.protocol.agent.actions import Deliver, Sent
from fleetwire.protocol.agent.bundling import DELIVERED, FORWARDED
from fleetwire.protocol.coordination import invariants
from fleetwire.protocol.coordination.digests import Digest, Trigger
from fleetwire.protocol.coordination.lease_holder import HolderState
from fleetwire.protocol.envelope import SignedMessage
from fleetwire.protocol.messages import (
    Capability,
    CapabilityAdvertisement,
    Commitment,
    CommitmentState,
    ExceptionReport,
    Header,
    LeaseGrant,
    Message,
    Scope,
    Terms,
    v2,
)
from fleetwire.protocol.messages.versions import window

from ..roles.fault_messages import digest_message
from ..sim.engine import Simulator
from .demo import START, Scenario
from .demo_behaviour import (
    COORDINATOR_LINEAGE,
    DAY,
    DIGEST,
    GIVE_UP,
    HOUR,
    MINUTE,
    STEP,
    TELEMETRY_WAKE_MS,
    Tally,
    Timing,
)
from .demo_digests import HELD_DIGESTS, Telemetry, writable
from .demo_results import Event, Interval
from .demo_sim_fleet import SimMemberRole, build

__all__ = ["RegionOutcome", "RegionRun", "play"]

TIMING = Timing()
POLL = 10 * MINUTE


@attrs.frozen
class RegionOutcome:
    """What one region's run produced (plain data: it crosses a process boundary)."""

    region: int
    tally: Tally
    samples: int  # telemetry samples taken on the members
    detail_bytes: int  # their encoded size
    cpu_seconds: float


class RegionRun:
    """One region's run: its fleet, its tally, and the callbacks the simulator calls."""

    def __init__(self, scenario: Scenario, region: int, light_scale: float = 1.0) -> None:
        self.scenario = scenario
        self.region = region
        self.seen = Tally()
        self.in_flight = 0
        self.traffic_end = START + round(scenario.days * DAY)
        self.telemetry: dict[int, Telemetry] = {}
        #: (member, sequence) of the digest messages that show samples out of control.
        self.anomalous: set[tuple[int, int]] = set()
        #: Digests each member still held at its end (not written: counted unwritable).
        self.unsent_digests: dict[int, list[int]] = {}
        self.fleet = build(
            scenario,
            TIMING,
            region=region,
            light_scale=light_scale,
            watch=self.watch,
            on_handled=self.on_handled,
        )
        self.sim = self.fleet.sim

    def watch(self, sim: Simulator) -> None:
        sim.on_sent = self.on_sent
        sim.on_deliver = self.on_deliver
        sim.on_transmit = self.on_transmit

    # --- counting -------------------------------------------------------------------------

    def on_transmit(self, node: int, size: int) -> None:
        self.seen.node_bytes[node] += size

    def on_sent(self, sim: Simulator, node: int, sent: Sent) -> None:
        signed = sent.message
        message, seen = signed.message, self.seen
        family = _family(message)
        seen.sent[family] += 1
        self.in_flight += 1
        if family == DIGEST:
            seen.digest_bytes += len(signed.envelope)
        if isinstance(message, LeaseGrant) and not message.resource.startswith("authority/"):
            if message.header.references == (message.claim,):  # a first grant, not a renewal
                seen.grants += 1
            seen.lease_trace.append(invariants.Granted(
                message.resource, message.holder, message.fencing_token, message.expires_at,
                node, sim.now, sim.now,
            ))  # fmt: skip

    def arrived(self, signed: SignedMessage, now: int) -> str:
        family = _family(signed.message)
        self.in_flight -= 1
        self.seen.delivered[family] += 1
        self.seen.latency_ms[family].append(now - signed.message.header.issued_at)
        return family

    def on_handled(self, node: int, signed: SignedMessage, now: int) -> None:
        self.arrived(signed, now)

    # --- what arrives ---------------------------------------------------------------------

    def on_deliver(self, sim: Simulator, node: int, delivery: Deliver) -> None:
        signed = delivery.message
        message, seen, now = signed.message, self.seen, sim.now
        family = self.arrived(signed, now)
        sim.acknowledge(node, delivery.delivery)
        if family == DIGEST:
            # Not parsed again here (module docstring): the member's own digest says.
            if (message.header.issuer, message.header.sequence) in self.anomalous:
                seen.digests_anomalous += 1
        elif isinstance(message, Commitment):
            if message.state is CommitmentState.OFFERED:
                accept = Commitment(
                    header=self.header(node, (signed.content_id,)),
                    state=CommitmentState.ACCEPTED, commitment=signed.content_id,
                )  # fmt: skip
                self.send(node, accept, message.header.issuer)
            elif message.state is CommitmentState.ACCEPTED and message.commitment is not None:
                self.fulfil_later(node, message.commitment, message.header.issuer)
        elif isinstance(message, ExceptionReport):
            parent = self.fleet.parents.get(node)
            if parent is None or message.severity < 3:
                seen.exceptions_open -= 1  # it reached the node that handles it
            else:
                seen.escalations += 1
                escalated = ExceptionReport(
                    header=self.header(node, (signed.content_id,)), code=message.code,
                    severity=message.severity, scope=Scope.CELL, scope_id=node,
                    affects=message.affects, detail=f"escalated from node {message.header.issuer}",
                )  # fmt: skip
                self.send(node, escalated, parent)

    def fulfil_later(self, node: int, commitment: object, promisee: int) -> None:
        rng = random.Random(self.scenario.seed * 15_485_863 + node + self.sim.now)
        at = self.sim.now + round(rng.uniform(1, 4) * DAY)
        if at > self.traffic_end:
            return  # the run ends first: the promise stays open

        def fulfil(sim: Simulator) -> None:
            done = Commitment(
                header=self.header(node), state=CommitmentState.FULFILLED,
                commitment=commitment,  # type: ignore[arg-type]
            )  # fmt: skip
            self.send(node, done, promisee)

        self.sim.every(at, _once(fulfil))

    # --- sending --------------------------------------------------------------------------

    def header(self, node: int, refs: tuple = ()) -> Header:  # type: ignore[type-arg]
        now = self.sim.now
        sequence = self.sim.agents[node].next_message_sequence(now)
        return Header(issuer=node, issued_at=now, sequence=sequence, references=refs)

    def send(self, node: int, message: Message, to: int) -> None:
        self.sim.send_at(self.sim.now, node, to, message)

    def advertise_versions(self) -> None:
        """Coordinators tell the versions they read to their parent and the nodes below them
        (the loopback engine's ``version_peers``), so members write digests to them at v2."""
        fleet = self.fleet
        below: dict[int, list[int]] = {}
        for child, parent in sorted(fleet.parents.items()):
            below.setdefault(parent, []).append(child)
        for node in sorted(below):
            peers = below[node] + ([fleet.parents[node]] if node in fleet.parents else [])
            speaks = window(self.sim.agents[node].config.protocol_version)
            for peer in peers:
                advert = CapabilityAdvertisement(
                    header=self.header(node), capabilities=(),
                    versions=(speaks.start, speaks.stop - 1), lineage=COORDINATOR_LINEAGE,
                )  # fmt: skip
                self.send(node, advert, peer)

    # --- a member's script ----------------------------------------------------------------

    def member(self, node: int) -> None:
        """Schedule ``node``'s script (module docstring)."""
        scenario, sim = self.scenario, self.sim
        cell = self.fleet.cell_of[node]
        coordinator = scenario.cell_coordinator(cell)
        role = self.fleet.members[node]
        local = random.Random(scenario.seed * 7919 + node)
        contention = "contention" in scenario.scenarios
        peers = [m for m, c in sorted(self.fleet.cell_of.items()) if c == cell and m != node]
        versions = window(self.sim.agents[node].config.protocol_version)
        advert: list[CapabilityAdvertisement] = []

        def begin(sim: Simulator) -> None:
            now = sim.now
            advert.append(CapabilityAdvertisement(
                header=self.header(node),
                capabilities=(Capability(
                    "refine/carbonaceous", local.randrange(10_000, 50_000), "kg", now,
                    now + 30 * DAY,
                ),),
                versions=(versions.start, versions.stop - 1),
                lineage=scenario.lineage(node), cell=cell,
            ))  # fmt: skip
            self.send(node, advert[0], coordinator)
            sim.every(now + TELEMETRY_WAKE_MS, self.telemetry_of(node, coordinator, advert[0]))
            sim.every(now + self.pause(local, contention), act)

        def act(sim: Simulator) -> int | None:
            now = sim.now
            roll = local.random()
            if roll < 0.5:
                dock = f"cell-{cell}/dock-{local.randrange(scenario.docks_per_cell)}"
                if role.holder.state(dock) is HolderState.IDLE:
                    self.hold(node, role, dock, local.uniform(2, 6) * HOUR)
            elif roll < 0.8:
                if peers:
                    offer = Commitment(
                        header=self.header(node), state=CommitmentState.OFFERED,
                        terms=Terms(node, local.choice(peers), "deliver/refined-carbon", 1200,
                                    "kg", now + 5 * DAY),
                    )  # fmt: skip
                    self.send(node, offer, offer.terms.promisee)  # type: ignore[union-attr]
            else:
                report = ExceptionReport(
                    header=self.header(node), code=local.randrange(1, 7),
                    severity=local.randrange(1, 6), scope=Scope.NODE, scope_id=node,
                )  # fmt: skip
                self.seen.exceptions_open += 1
                self.send(node, report, coordinator)
            at = now + self.pause(local, contention)
            return at if at < self.traffic_end else None

        start = START + round(local.uniform(0, HOUR))
        sim.every(start, _once(begin))

    @staticmethod
    def pause(local: random.Random, contention: bool) -> int:
        return round(local.uniform(*((2, 6) if contention else (4, 12))) * HOUR)

    def hold(self, node: int, role: SimMemberRole, dock: str, hold_ms: float) -> None:
        """Claim ``dock``; once usable, use it in 15-minute operations, then release it."""
        sim, seen = self.sim, self.seen
        claimed = sim.now
        sim.act(node, role, role.want(dock, TIMING.dock_term, claimed))
        started: list[int] = []

        def step(sim: Simulator) -> int | None:
            now = sim.now
            role.notices.clear()  # the application learns by trying to use the lease
            if not started:  # waiting for a usable grant
                if role.use(dock, now) is None and now - claimed < GIVE_UP:
                    return now + POLL
                if role.use(dock, now) is None:
                    seen.given_up += 1
                else:
                    seen.waits_ms.append(now - claimed)
                started.append(now)
            if role.use(dock, now) is not None and now - started[0] < hold_ms:
                token = role.use(dock, now, STEP)
                if token is not None:
                    seen.lease_trace.append(
                        invariants.Used(dock, node, token, now, now + STEP, now)
                    )
                    seen.dock_use_ms += STEP
                    if dock.startswith("cell-0/"):
                        seen.cut_cell_dock_use_ms += STEP
                return now + STEP
            sim.act(node, role, role.release(dock, now))
            return None

        sim.every(claimed + POLL, step)

    def telemetry_of(
        self, node: int, coordinator: int, advert: CapabilityAdvertisement
    ) -> Callable[[Simulator], int | None]:
        """Sample, digest, and send each digest as the version-2 message."""
        sampled = self.telemetry[node] = Telemetry(node, self.scenario.seed, self.sim.now)
        seen = self.seen

        held: list[Digest] = []
        versions = self.sim.agents[node].versions

        def wake(sim: Simulator) -> int | None:
            now = sim.now
            held.extend(sampled.advance(now, _healthy))
            # The version-2 digest message goes once the coordinator said it reads it; until
            # then up to HELD_DIGESTS wait (the loopback engine's rule, ``demo_digests``).
            if not writable(versions, coordinator):
                seen.digests_unwritable += max(0, len(held) - HELD_DIGESTS)
                del held[:-HELD_DIGESTS]
                held_over[0] = len(held)
                at = now + TELEMETRY_WAKE_MS
                return at if at < self.traffic_end else None
            while held:
                digest = held.pop(0)
                header = self.header(node)
                message = digest_message(header, digest)
                if any(m.out_of_control for m in digest.metrics.values()):
                    self.anomalous.add((node, header.sequence))
                seen.digests[
                    "threshold" if digest.trigger is Trigger.THRESHOLD else "periodic"
                ] += 1
                self.send(node, message, coordinator)
            held_over[0] = 0
            at = now + TELEMETRY_WAKE_MS
            return at if at < self.traffic_end else None

        held_over = self.unsent_digests[node] = [0]
        return wake

    # --- sampling -------------------------------------------------------------------------

    def sampler(
        self, on_interval: Callable[[Interval, Scenario], None] | None
    ) -> Callable[[Simulator], int | None]:
        scenario, fleet, seen = self.scenario, self.fleet, self.seen
        step = scenario.interval_ms
        end = round((scenario.days + 1) * DAY)
        # The partition scenario cuts cell 0, of region 0.
        cut = scenario.partition_days if self.region == 0 else None
        cut_store = fleet.sim.agents[scenario.cell_coordinator(0)].store if cut else None
        cells = sorted(fleet.cells)
        had = [False] * len(cells)
        ever_granted: set[int] = set()
        docks = {
            node: [f"cell-{fleet.cell_of[node]}/dock-{d}" for d in range(scenario.docks_per_cell)]
            for node in fleet.members
        }

        def sample(sim: Simulator) -> int | None:
            nonlocal had
            now = sim.now
            t1 = now - START
            t0 = t1 - step
            authority = [fleet.cells[c].active(now) for c in cells]
            _authority_events(seen, t1, cells, had, authority, ever_granted)
            had = authority
            if cut:
                for at, kind in ((cut[0], "partition-cut"), (cut[1], "partition-healed")):
                    if t0 < round(at * DAY) <= t1:
                        seen.events.append(Event(round(at * DAY), kind, "cell 0 ⇄ its region"))
            waiting = 0
            if cut_store is not None:
                tombstones = sum(len(cut_store.pending_for(hop, 1 << 30))
                                 for hop in (DELIVERED, FORWARDED))  # fmt: skip
                waiting = cut_store.count() - tombstones
            interval = Interval(
                start_ms=t0,
                end_ms=t1,
                bytes_sent=sum(seen.node_bytes.values()),
                busiest_node_bytes=max(seen.node_bytes.values(), default=0),
                bundles_in_flight=self.in_flight,
                leases_held=sum(
                    1
                    for node, role in fleet.members.items()
                    for dock in docks[node]
                    if role.use(dock, now) is not None
                ),
                dock_use_ms=seen.dock_use_ms,
                cell0_dock_use_ms=seen.cut_cell_dock_use_ms,
                exceptions_open=seen.exceptions_open,
                cells_with_authority=sum(authority),
                waiting_at_cut_cell=waiting,
            )
            seen.node_bytes.clear()
            seen.dock_use_ms = 0
            seen.cut_cell_dock_use_ms = 0
            seen.intervals.append(interval)
            if on_interval is not None:
                on_interval(interval, scenario)
            return now + step if t1 + step <= end else None

        return sample


def _family(message: Message) -> str:
    if isinstance(message, v2.Digest):
        return DIGEST
    return message.TYPE.family.value


def _healthy(_at: int) -> bool:
    return False  # no defect shows: the fault scenario is the loopback engine's


def _once(call: Callable[[Simulator], object]) -> Callable[[Simulator], int | None]:
    def once(sim: Simulator) -> None:
        call(sim)

    return once


def _authority_events(
    seen: Tally, at_ms: int, cells: list[int], had: list[bool], has: list[bool],
    ever_granted: set[int],
) -> None:  # fmt: skip
    """Note each cell whose coordinator gained or lost its authority lease since the last look
    (the loopback engine's events: ``authority-granted`` the first time, then ``-lost`` and
    ``-regained``)."""
    for c, was, now_ in zip(cells, had, has, strict=True):
        if was != now_:
            kind = "authority-lost" if was else "authority-regained"
            if c not in ever_granted:
                kind = "authority-granted"
                ever_granted.add(c)
            seen.events.append(Event(at_ms, kind, f"cell {c}"))


def play(
    scenario: Scenario,
    region: int,
    on_interval: Callable[[Interval, Scenario], None] | None,
    light_scale: float = 1.0,
) -> RegionOutcome:
    """Run region ``region`` of ``scenario`` to the end of its drain day."""
    cpu = time.process_time()
    state = RegionRun(scenario, region, light_scale)
    state.advertise_versions()
    for member in sorted(state.fleet.members):
        state.member(member)
    state.sim.every(START + scenario.interval_ms, state.sampler(on_interval))
    state.sim.run(START + round((scenario.days + 1) * DAY))
    state.seen.digests_unwritable += sum(n for n, in state.unsent_digests.values())
    return RegionOutcome(
        region, state.seen, sum(t.samples for t in state.telemetry.values()),
        sum(t.detail_bytes for t in state.telemetry.values()), time.process_time() - cpu,
    )  # fmt: skip
