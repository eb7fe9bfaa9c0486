"""Scripted state-machine scenarios, run by fleetwire's sans-IO coordination cores.

Theory of operation
-------------------
The adapter protocol's ``scenario`` request (spec/README.md, "Scenarios") names a machine, a
configuration and a list of steps, each at a time ``at`` (the machine's own clock, DTN ms):
a message received (its bytes, as a node's runtime hands a verified message to the machine),
the passage of time (``tick``), or a local command (``want``, ``use``, ``revoke``, ``accept``,
...). The answer holds, per step, what the machine did: the messages it sends (bytes and
destination) and the answers to queries (``use``, ``state``). Time is only ever passed in, so a
scenario is a pure function of its script — the same for every implementation, which is what
lets the suite judge *behaviour* and not only bytes.

:func:`run_scenario` is the reference: it drives :mod:`fleetwire.protocol.coordination`'s lease
authority, lease holder, commitment tracker and escalator. Another implementation drives its
own machines the same way behind its adapter.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from fleetwire.protocol.coordination import commitments as cm
from fleetwire.protocol.coordination import escalation as esc
from fleetwire.protocol.coordination import lease_authority as la
from fleetwire.protocol.coordination import lease_holder as lh
from fleetwire.protocol.ids import ContentId
from fleetwire.protocol.messages import Scope, decode_message, encode_message

__all__ = ["MACHINES", "ScenarioError", "run_scenario"]

#: The machines a scenario may name (spec/README.md, "Scenarios").
MACHINES = ("lease-authority", "lease-holder", "commitment-tracker", "escalation")

Outputs = list[list[dict[str, Any]]]


class ScenarioError(ValueError):
    """A scenario request the machine cannot run (unknown machine, step or field)."""


def _message(step: dict[str, Any]) -> tuple[Any, ContentId]:
    data = bytes.fromhex(step["receive"])
    return decode_message(data), ContentId.of(data)


def _sends(actions: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for action in actions:
        message = getattr(action, "message", None) or getattr(action, "report", None)
        if message is None or not hasattr(message, "header"):
            continue  # a note (Refused, Changed, Opened, ...), not a message sent
        out.append({"send": encode_message(message).hex(), "to": getattr(action, "to", None)})
    return out


def _authority(config: dict[str, Any], steps: list[dict[str, Any]]) -> Outputs:
    machine = la.LeaseAuthority(
        int(config["node"]),
        la.AuthorityConfig(
            max_drift_ms=int(config["max_drift_ms"]),
            max_term_ms=int(config["max_term_ms"]),
            min_term_ms=int(config.get("min_term_ms", 0)),
        ),
    )
    outputs: Outputs = []
    for step in steps:
        now = int(step["at"])
        if "receive" in step:
            message, cid = _message(step)
            actions: list[Any] = machine.receive(message, cid, now)
        elif "revoke" in step:
            revoke = step["revoke"]
            actions = machine.revoke(str(revoke["resource"]), int(revoke["effective_at"]), now)
        elif step.get("tick"):
            actions = machine.tick(now)
        else:
            raise ScenarioError(f"lease-authority has no step {sorted(step)}")
        outputs.append(_sends(actions))
    return outputs


def _holder(config: dict[str, Any], steps: list[dict[str, Any]]) -> Outputs:
    machine = lh.LeaseHolder(
        int(config["node"]),
        (int(config["authority"]),),
        lh.HolderConfig(
            max_drift_ms=int(config["max_drift_ms"]),
            renew_lead_ms=int(config["renew_lead_ms"]),
            retry_ms=int(config["retry_ms"]),
            min_use_ms=int(config.get("min_use_ms", 1)),
        ),
    )
    outputs: Outputs = []
    for step in steps:
        now = int(step["at"])
        if "receive" in step:
            message, cid = _message(step)
            outputs.append(_sends(machine.receive(message, cid, now)))
        elif "want" in step:
            want = step["want"]
            actions = machine.want(
                str(want["resource"]), int(want["term_ms"]), now, int(want.get("priority", 0))
            )
            outputs.append(_sends(actions))
        elif "use" in step:
            use = step["use"]
            token = machine.use(str(use["resource"]), now, int(use.get("duration_ms", 0)))
            outputs.append([{"use": token}])
        elif "release" in step:
            outputs.append(_sends(machine.release(str(step["release"]["resource"]), now)))
        elif step.get("tick"):
            outputs.append(_sends(machine.tick(now)))
        else:
            raise ScenarioError(f"lease-holder has no step {sorted(step)}")
    return outputs


def _tracker(config: dict[str, Any], steps: list[dict[str, Any]]) -> Outputs:
    counter = itertools.count(int(config.get("sequence", 0)) + 1)
    machine = cm.CommitmentTracker(int(config["node"]), lambda: next(counter))
    local: dict[str, Callable[[ContentId, int], list[Any]]] = {
        "accept": machine.accept,
        "fulfil": machine.fulfil,
        "withdraw": machine.withdraw,
    }
    outputs: Outputs = []
    for step in steps:
        now = int(step["at"])
        if "receive" in step:
            message, _cid = _message(step)
            outputs.append(_sends(machine.receive(message, now)))
        elif "state" in step:
            state = machine.state(ContentId.from_bytes(bytes.fromhex(step["state"])))
            outputs.append([{"state": None if state is None else state.name.lower()}])
        elif (verb := next((v for v in local if v in step), None)) is not None:
            commitment = ContentId.from_bytes(bytes.fromhex(step[verb]))
            try:
                outputs.append(_sends(local[verb](commitment, now)))
            except Exception as exc:  # a local command the machine refuses: say so, go on
                outputs.append([{"refused": str(exc)}])
        elif step.get("tick"):
            outputs.append(_sends(machine.tick(now)))
        else:
            raise ScenarioError(f"commitment-tracker has no step {sorted(step)}")
    return outputs


def _escalation(config: dict[str, Any], steps: list[dict[str, Any]]) -> Outputs:
    counter = itertools.count(int(config.get("sequence", 0)) + 1)
    machine = esc.Escalator(
        int(config["node"]),
        Scope(int(config.get("scope", Scope.CELL))),
        int(config["scope_id"]),
        lambda: next(counter),
    )
    outputs: Outputs = []
    for step in steps:
        now = int(step["at"])
        if "receive" in step:
            report, cid = _message(step)
            fault = esc.Fault(report, cid, str(step.get("lineage", "")))
            outputs.append(_sends(machine.receive(fault, now)))
        elif step.get("tick"):
            outputs.append(_sends(machine.tick(now)))
        else:
            raise ScenarioError(f"escalation has no step {sorted(step)}")
    return outputs


_RUNNERS: dict[str, Callable[[dict[str, Any], list[dict[str, Any]]], Outputs]] = {
    "lease-authority": _authority,
    "lease-holder": _holder,
    "commitment-tracker": _tracker,
    "escalation": _escalation,
}


def run_scenario(machine: str, config: dict[str, Any], steps: list[dict[str, Any]]) -> Outputs:
    """Run one scenario on fleetwire's own machine; per step, what it did."""
    runner = _RUNNERS.get(machine)
    if runner is None:
        raise ScenarioError(f"no machine {machine!r} (known: {', '.join(MACHINES)})")
    return runner(config, steps)
