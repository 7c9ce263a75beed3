"""SimPy model of GPU + HBM, DReX CEM (PFUs, NMAs), interconnect and host memory, replaying traces.

Public API (what `cemsim run` and sweeps call):

    prep = prepare(system, header, steps, context=None, batch=None, max_steps=None, where="trace")
    des = simulate(prep, steps=None, timeline=False, progress=None)   # discrete-event model
    twin = analytic(prep, steps=None)                                 # closed-form twin
    des.to_json_dict()                                                # the `cemsim run --json` object

Modules: one per component (gpu, hbm, cem, link, host_memory), registry (sim classes by (component, impl)),
system (build + wire), plan / work (what each step asks of each component), replay (the SimPy processes),
capacity, energy, result, analytic, timeline (Perfetto), output (run directory).
"""

from cemsim.sim.analytic import analytic
from cemsim.sim.result import SimResult
from cemsim.sim.simulate import Prepared, prepare, simulate

__all__ = ["Prepared", "SimResult", "analytic", "prepare", "simulate"]
