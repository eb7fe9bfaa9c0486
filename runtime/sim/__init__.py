"""The discrete-event fleet simulator (:mod:`.engine`) and its standard fleet (:mod:`.fleet`).

Public API, for anything that runs a scenario on the simulator:

* :class:`.engine.Simulator` (``seed``, ``start``, ``on_deliver``) — ``add(agent)``,
  ``connect(a, b, LinkModel)``, ``send_at(at, source, to, message)``, ``every(at, call)``
  (``send_now(source, to, message)`` from inside it),
  ``attach(node, handler)`` / ``act(node, handler, sends)`` for roles running in an agent,
  ``on_sent`` (every message signed and held), ``run(until)``, ``stats`` (:class:`SimStats`:
  ``messages`` signed, ``delivered``, ``handled`` by roles, latency, losses…).
* :class:`.engine.LinkModel` — light time, rate, loss, duplication, jitter, contact windows.
* :func:`.fleet.build_fleet` (``nodes``, ``seed``, ``start``, ``cell_size``, link models,
  ``leases=LeaseSetup(...)`` to run the lease roles) → :class:`.fleet.Fleet` (the simulator,
  keys, ``coordinator_of``, ``members``, the trust store, the roles, the grant/use ``trace``
  and ``check_leases()``).
* :func:`.fleet.add_traffic` (a Poisson stream of all four families — three when the lease
  roles carry the fourth) and :func:`.fleet.add_lease_work` (members want, use, release).
* :func:`.parallel.run_fleet` (``workers``, ``until``, a scenario, ``build_fleet``'s
  arguments) → :class:`.parallel.ParallelRun`: the same fleet split by cells across OS
  processes (:class:`.fleet.Part`), run in steps with a few steps of slack between parts
  (:mod:`.mesh` carries their reports), its stats and lease trace merged;
  :class:`.parallel.WorkerError` when a worker fails.
"""

from .engine import LinkModel, SimStats, Simulator
from .fleet import Fleet, LeaseSetup, Part, add_lease_work, add_traffic, build_fleet
from .parallel import ParallelRun, WorkerError, run_fleet

__all__ = [
    "Fleet",
    "LeaseSetup",
    "LinkModel",
    "ParallelRun",
    "Part",
    "SimStats",
    "Simulator",
    "WorkerError",
    "add_lease_work",
    "add_traffic",
    "build_fleet",
    "run_fleet",
]
